//! `vswitchctl`'s output and exit status as a user sees them: multi-name commands go on
//! past a failure, dual-stack listings, wording.

use std::time::Duration;

use vswitchd_e2e::*;

/// Host namespace + daemon with one worker.
fn world(test: &str) -> Option<World> {
    let mut w = World::new(test, &[])?;
    let host = w.netns("host");
    w.start_daemon(&host, &["--workers", "1"]);
    Some(w)
}

#[test]
fn network_rm_goes_on_past_failures() {
    let Some(w) = world("cli-rm") else { return };
    let sb = w.name("s1");
    for (n, subnet) in [("na", "10.81.0.0/24"), ("busy", "10.82.0.0/24"), ("nc", "10.83.0.0/24")] {
        w.ctl_ok(0, &["network", "create", n, "--subnet", subnet]);
    }
    w.ctl_ok(0, &["sandbox", "create", &sb]);
    w.ctl_ok(0, &["connect", "busy", &sb]);

    // In use and not found in the middle: the names after them are still removed.
    let o = w.ctl(0, &["network", "rm", "na", "busy", "nonet", "nc"]);
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "stdout {out:?} stderr {err:?}");
    assert_eq!(out.lines().collect::<Vec<_>>(), ["na", "nc"], "{out}");
    let errs: Vec<&str> = err.lines().collect();
    assert_eq!(errs.len(), 2, "{err}");
    assert!(errs[0].starts_with("Error:") && errs[0].contains("busy") && errs[0].contains("active endpoints"), "{err}");
    assert!(errs[1].starts_with("Error:") && errs[1].contains("nonet") && errs[1].contains("not found"), "{err}");
    assert_eq!(w.ctl_ok(0, &["network", "ls", "-q"]).trim(), "busy");

    // `network inspect`: the ones found are printed, the missing one is an error.
    let o = w.ctl(0, &["network", "inspect", "busy", "nonet"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v.as_array().map(|a| a.len()), Some(1), "{v}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("nonet"));
}

#[test]
fn dual_stack_listings_show_ipv6() {
    let Some(w) = world("cli-dual") else { return };
    let sb = w.name("s1");
    w.ctl_ok(0, &["network", "create", "dual", "--ipv6", "--subnet", "10.80.0.0/24", "--subnet", "fd00:80::/64"]);
    w.ctl_ok(0, &["sandbox", "create", &sb]);
    w.ctl_ok(0, &["connect", "dual", &sb]);
    let ls = w.ctl_ok(0, &["network", "ls"]);
    let row = ls.lines().find(|l| l.contains(" dual ")).unwrap_or_else(|| panic!("{ls}"));
    assert!(row.contains("10.80.0.0/24,fd00:80::/64") && row.contains("10.80.0.1,fd00:80::1"), "{ls}");
    let ls = w.ctl_ok(0, &["sandbox", "ls"]);
    assert!(ls.contains("dual:eth0=10.80.0.2,fd00:80::2"), "{ls}");
}

#[test]
fn ping_says_one_worker() {
    let Some(w) = world("cli-ping") else { return };
    let out = w.ctl_ok(0, &["ping"]);
    assert!(out.trim_end().ends_with("(1 worker)"), "{out}");
}

#[test]
fn a_daemon_that_does_not_answer_is_reported_with_exit_3() {
    // A socket that accepts and never answers (a hung daemon).
    let dir = std::env::temp_dir().join(format!("vswitchd-cli-hung-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let sock = dir.join("hung.sock");
    let _ = std::fs::remove_file(&sock);
    let _l = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let Ok(o) = std::process::Command::new(bin_dir().join("vswitchctl")).arg("--socket").arg(&sock).args(["--timeout", "1", "network", "ls"]).output() else {
        assert!(!required(), "vswitchctl not built");
        return;
    };
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{e}");
    assert!(e.contains("did not answer within 1 s (--timeout)") && e.trim().lines().count() == 1, "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The API serves a bounded number of clients: one past the limit gets a one-line error
/// instead of a thread of its own, and room comes back when clients leave.
#[test]
fn api_clients_are_bounded() {
    let Some(w) = world("cli-clients") else { return };
    let sock = w.daemon(0).socket.clone();
    let pid = w.daemon(0).pid().expect("daemon runs");
    let threads = || std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0);
    let before = threads();
    // Idle clients: connected, sending nothing.
    let idle: Vec<_> = (0..128).map(|_| std::os::unix::net::UnixStream::connect(&sock).expect("connect")).collect();
    assert!(wait_for(Duration::from_secs(5), || threads() >= before + 128), "{} threads", threads());
    let e = w.ctl_err(0, &["ping"]);
    assert!(e.contains("too many API clients"), "{e}");
    assert!(threads() < before + 130, "no thread for a refused client: {}", threads());
    drop(idle);
    assert!(wait_for(Duration::from_secs(5), || w.ctl(0, &["ping"]).status.success()), "served again once they left");
    assert!(wait_for(Duration::from_secs(5), || threads() <= before + 1), "their threads are gone: {} vs {before}", threads());
}
