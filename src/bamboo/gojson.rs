//! JSON bytes as Go's `json.Marshal` writes them: no trailing newline, and `<`, `>`, `&`, U+2028, U+2029 escaped
//! inside strings. Bamboo's clients see the same bytes from rattan. Map keys are sorted by using `BTreeMap`s.

use serde::Serialize;
use serde_json::ser::Formatter;
use std::io;

struct GoFormatter;

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let esc = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            w.write_all(&fragment.as_bytes()[start..i])?;
            w.write_all(esc.as_bytes())?;
            start = i + c.len_utf8();
        }
        w.write_all(&fragment.as_bytes()[start..])
    }
}

pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoFormatter);
    // Our own types serialize infallibly (string keys, no non-finite floats).
    if value.serialize(&mut ser).is_err() {
        return b"null".to_vec();
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_like_go() {
        let v = serde_json::json!({"b": "x<y>&z\u{2028}", "a": "plain"});
        assert_eq!(
            String::from_utf8(super::to_vec(&v)).unwrap(),
            r#"{"a":"plain","b":"x\u003cy\u003e\u0026z\u2028"}"#
        );
    }
}
