//! What ships beside the binary: the systemd unit (checked by `systemd-analyze verify`), the Dockerfile (checked
//! without a `docker build`: what it copies exists, and the final image is as the README promises), the licence.

use std::path::Path;

fn read(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit = read("config/rattan.service");
    for line in [
        "DynamicUser=yes",
        "StateDirectory=rattan",
        "ReadWritePaths=/var/lib/rattan",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
    // Verified with the binary this build made standing in for the installed one (verify checks it exists).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rattan.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/rattan", env!("CARGO_BIN_EXE_rattan")),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (tests/run.sh installs systemd)");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
    // The command line it runs parses: the flags exist.
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=/usr/local/bin/rattan "))
        .unwrap();
    let mut args: Vec<&str> = exec.split_whitespace().collect();
    args.insert(1, "--help");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rattan"))
        .args(&args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_dockerfile_copies_what_exists_and_ships_no_build_tools() {
    let df = read("Dockerfile");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for line in df
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(
                root.join(src).exists(),
                "{line}: {src} is not in the repository"
            );
        }
    }
    let final_stage = df.rsplit("\nFROM ").next().unwrap();
    assert!(final_stage.starts_with("debian:"), "{final_stage}");
    for tool in ["cargo", "rustc", "build-essential", "gcc"] {
        assert!(!final_stage.contains(tool), "{tool} in the final image");
    }
    assert!(final_stage.contains("apt-get purge -y libcap2-bin"));
    assert!(final_stage.contains("USER rattan"));
    assert!(final_stage.contains("VOLUME [\"/var/lib/rattan\"]"));
    assert!(final_stage.contains("HAPROXY_OUTPUT_PATH=/var/lib/rattan/haproxy.cfg"));
    assert!(final_stage.contains("HEALTHCHECK") && final_stage.contains("/readyz"));
    assert!(
        final_stage.contains("ENTRYPOINT [\"/usr/bin/tini\", \"--\", \"/usr/local/bin/rattan\"]")
    );
    // The dependency layer is built before the sources are copied.
    let deps = df.find("cargo build").unwrap();
    assert!(deps < df.find("COPY src ./src").unwrap());
    // HAPROXY_OUTPUT_PATH is the variable the flag reads.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rattan"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("HAPROXY_OUTPUT_PATH"));
}

#[test]
fn licence_and_changelog() {
    assert!(read("LICENSE").contains("Apache License") && read("LICENSE").contains("Version 2.0"));
    assert!(read("Cargo.toml").contains("license = \"Apache-2.0\""));
    assert!(read("CHANGELOG.md").contains("## [Unreleased]"));
}
