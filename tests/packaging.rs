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

/// Every process below `pid` (its children, theirs, …) with its state letter (`Z`: a zombie nobody reaped).
fn descendants(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                let stat = std::fs::read_to_string(format!("/proc/{c}/stat")).unwrap_or_default();
                // The state follows the command name in parentheses.
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next())
                    .unwrap_or('?');
                out.push((c, state));
                todo.push(c);
            }
        }
    }
    out
}

/// The image runs rattan under tini: a reload command that daemonizes (as `haproxy -D` does) leaves an orphan,
/// which becomes PID 1's child; tini reaps it. Checked in a PID namespace of its own, as in a container, beside
/// rattan itself as PID 1, which does not (why the image has an init).
#[tokio::test(flavor = "multi_thread")]
async fn an_init_reaps_what_reload_commands_leave_behind() {
    let m = rattan::dev::simulator::Simulator::start(rattan::dev::simulator::SimOptions {
        serve_tasks: true,
        ..Default::default()
    })
    .await
    .unwrap();
    m.create_app(rattan::dev::simulator::AppSpec {
        id: "/web".into(),
        instances: 1,
        ..Default::default()
    })
    .await;
    let mut zombies = Vec::new();
    for with_tini in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("haproxy.cfg");
        let mut cmd = std::process::Command::new("unshare");
        cmd.args(["--fork", "--pid", "--mount-proc"]);
        if with_tini {
            cmd.args(["tini", "--"]);
        }
        let mut child = cmd
            .arg(env!("CARGO_BIN_EXE_rattan"))
            .args(["run", "--mode", "haproxy", "--marathon", &m.url()])
            .args([
                "--api-bind",
                "127.0.0.1:0",
                "--haproxy-min-interval",
                "100ms",
            ])
            .args(["--data-dir", dir.path().to_str().unwrap()])
            .args(["--haproxy-output", out.to_str().unwrap()])
            // Daemonizes: the shell exits at once, its background child lives on and ends 200 ms later.
            .args(["--haproxy-reload-cmd", "sh -c 'sleep 0.2 & exit 0'"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("unshare (util-linux)");
        let t = std::time::Instant::now();
        while !out.exists() {
            assert!(t.elapsed().as_secs() < 15, "no config written");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // A second reload, then time for both orphans to end.
        m.scale("/web", 2).await;
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let below = descendants(child.id());
        zombies.push(below.iter().filter(|(_, s)| *s == 'Z').count());
        // The namespace's init first: its end takes every process of the namespace with it.
        for (pid, _) in &below {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    assert_eq!(zombies[0], 0, "under tini: {zombies:?}");
    assert!(
        zombies[1] > 0,
        "rattan as PID 1 reaps orphans after all? {zombies:?}"
    );
}
