//! The one reading of "true" and "false", for flags, environment variables, rule config keys and labels. Two
//! vocabularies, because the tools rattan replaces differ: Bamboo's environment went through Go's
//! `strconv.ParseBool` (where `yes` is an error, and an error must stay one), while marathon-lb's labels and
//! hand-written rules also say yes/no, y/n, on/off.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// `1 t true` / `0 f false`, in any case: flags and the environment.
    Go,
    /// Those, and `y yes on` / `n no off`: labels and rule config.
    Words,
}

/// `Some(true)`, `Some(false)`, or `None` for a value that is neither in `spelling`.
pub fn parse(s: &str, spelling: Spelling) -> Option<bool> {
    const TRUE: [&str; 6] = ["1", "t", "true", "y", "yes", "on"];
    const FALSE: [&str; 6] = ["0", "f", "false", "n", "no", "off"];
    let n = match spelling {
        Spelling::Go => 3,
        Spelling::Words => 6,
    };
    let s = s.trim();
    if TRUE[..n].iter().any(|t| s.eq_ignore_ascii_case(t)) {
        Some(true)
    } else if FALSE[..n].iter().any(|f| s.eq_ignore_ascii_case(f)) {
        Some(false)
    } else {
        None
    }
}

/// [`parse`] in Go's spelling, as a command-line value parser.
pub fn arg(s: &str) -> Result<bool, String> {
    parse(s, Spelling::Go).ok_or_else(|| format!("'{s}' is not true or false"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_in_any_case() {
        for t in ["1", "t", "T", "true", "True", "TRUE", " tRuE "] {
            assert_eq!(parse(t, Spelling::Go), Some(true), "{t}");
            assert_eq!(parse(t, Spelling::Words), Some(true), "{t}");
        }
        for f in ["0", "f", "F", "false", "False", "FALSE"] {
            assert_eq!(parse(f, Spelling::Go), Some(false), "{f}");
            assert_eq!(parse(f, Spelling::Words), Some(false), "{f}");
        }
        for (w, v) in [
            ("yes", true),
            ("Y", true),
            ("on", true),
            ("no", false),
            ("N", false),
            ("OFF", false),
        ] {
            assert_eq!(parse(w, Spelling::Go), None, "{w}");
            assert_eq!(parse(w, Spelling::Words), Some(v), "{w}");
        }
        for x in ["", "2", "truth", "nope", "enabled"] {
            assert_eq!(parse(x, Spelling::Words), None, "{x}");
        }
        assert!(arg("yes").is_err());
    }
}
