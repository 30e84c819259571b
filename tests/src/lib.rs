//! Support for end-to-end tests: each test builds its own world of network namespaces
//! (hosts, sandboxes, an "external" namespace), runs `vswitchd` inside a host namespace
//! with `nsenter --net=…` (never `ip netns exec`, whose private mount namespace would
//! hide the sandboxes the daemon creates), drives it with `vswitchctl`, sends real
//! traffic, and tears everything down when the `World` is dropped — also when the test
//! panics. Nothing here touches the root namespace beyond creating namespaces.
//!
//! Without root the tests skip with a printed reason, unless `VSWITCHD_E2E=1`, under
//! which a missing privilege or tool is a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// True when end-to-end tests must run (CI).
pub fn required() -> bool {
    std::env::var("VSWITCHD_E2E").map(|v| v == "1").unwrap_or(false)
}

fn is_root() -> bool {
    // SAFETY: trivial syscall.
    unsafe { libc::geteuid() == 0 }
}

fn have(tool: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// Directory holding `vswitchd` and `vswitchctl` (next to the test binary's `deps/`),
/// or `VSWITCHD_BIN_DIR`.
pub fn bin_dir() -> PathBuf {
    if let Ok(d) = std::env::var("VSWITCHD_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// A running vswitchd.
pub struct Daemon {
    pub host: String,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    pub args: Vec<String>,
    child: Option<Child>,
}

impl Daemon {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

/// One test's namespaces, daemons and files. Dropping it removes them all.
pub struct World {
    pub prefix: String,
    pub dir: PathBuf,
    daemons: Vec<Daemon>,
    bins: PathBuf,
}

impl World {
    /// A new world, or `None` (after printing why) when the test must be skipped.
    pub fn new(test: &str, tools: &[&str]) -> Option<World> {
        let mut missing = Vec::new();
        if !is_root() {
            missing.push("root privileges".to_string());
        }
        for t in ["ip", "nsenter"].iter().chain(tools) {
            if !have(t) {
                missing.push(format!("the tool {t}"));
            }
        }
        let bins = bin_dir();
        for b in ["vswitchd", "vswitchctl"] {
            if !bins.join(b).exists() {
                missing.push(format!("{} (run `cargo build --bins` first)", bins.join(b).display()));
            }
        }
        if !missing.is_empty() {
            let msg = format!("{test}: needs {}", missing.join(", "));
            if required() {
                panic!("VSWITCHD_E2E=1 and {msg}");
            }
            eprintln!("SKIPPED {msg}");
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("vt{}x{}", std::process::id() % 100_000, n);
        let dir = std::env::temp_dir().join(format!("vswitchd-e2e-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        eprintln!("[{test}] world {prefix} in {}", dir.display());
        Some(World { prefix, dir, daemons: Vec::new(), bins })
    }

    /// The full name of a namespace/sandbox of this world.
    pub fn name(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    /// Creates a plain namespace (a host, or the external world) with `lo` up.
    pub fn netns(&self, short: &str) -> String {
        let n = self.name(short);
        sh_ok(&format!("ip netns add {n} && ip -n {n} link set lo up"));
        n
    }

    /// Starts vswitchd inside namespace `host` with its own state dir and socket.
    pub fn start_daemon(&mut self, host: &str, extra: &[&str]) -> usize {
        let i = self.daemons.len();
        let state_dir = self.dir.join(format!("state-{i}"));
        let socket = self.dir.join(format!("vswitchd-{i}.sock"));
        let log = self.dir.join(format!("vswitchd-{i}.log"));
        let mut args: Vec<String> = vec![
            "--state-dir".into(),
            state_dir.display().to_string(),
            "--socket".into(),
            socket.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut d = Daemon { host: host.to_string(), socket, state_dir, log, args, child: None };
        self.spawn(&mut d);
        self.daemons.push(d);
        i
    }

    fn spawn(&self, d: &mut Daemon) {
        let logf = std::fs::OpenOptions::new().create(true).append(true).open(&d.log).expect("log file");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", d.host))
            .arg(self.bins.join("vswitchd"))
            .args(&d.args)
            .env("RUST_LOG", std::env::var("VSWITCHD_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("log"))
            .stderr(logf)
            .spawn()
            .expect("spawn vswitchd");
        d.child = Some(child);
        let sock = d.socket.clone();
        let ok = wait_for(Duration::from_secs(30), || {
            Command::new(self.bins.join("vswitchctl")).arg("--socket").arg(&sock).arg("ping").output().map(|o| o.status.success()).unwrap_or(false)
        });
        if !ok {
            panic!("vswitchd did not come up; log:\n{}", std::fs::read_to_string(&d.log).unwrap_or_default());
        }
    }

    pub fn daemon(&self, i: usize) -> &Daemon {
        &self.daemons[i]
    }

    /// Stops daemon `i` with SIGTERM (graceful) or SIGKILL, and waits for it.
    pub fn stop_daemon(&mut self, i: usize, signal: i32) -> Option<std::process::ExitStatus> {
        let d = &mut self.daemons[i];
        let mut c = d.child.take()?;
        // SAFETY: signalling a child we started, by PID.
        unsafe { libc::kill(c.id() as i32, signal) };
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > end {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The arguments daemon `i` is (re)started with, to change before a restart.
    pub fn daemon_args_mut(&mut self, i: usize) -> &mut Vec<String> {
        &mut self.daemons[i].args
    }

    /// Starts daemon `i` again with the same arguments.
    pub fn restart_daemon(&mut self, i: usize) {
        let mut d = std::mem::replace(
            &mut self.daemons[i],
            Daemon { host: String::new(), socket: PathBuf::new(), state_dir: PathBuf::new(), log: PathBuf::new(), args: vec![], child: None },
        );
        self.spawn(&mut d);
        self.daemons[i] = d;
    }

    /// Runs vswitchctl against daemon `i`.
    pub fn ctl(&self, i: usize, args: &[&str]) -> Output {
        Command::new(self.bins.join("vswitchctl")).arg("--socket").arg(&self.daemons[i].socket).args(args).output().expect("vswitchctl")
    }

    /// Runs vswitchctl and returns stdout, panicking with stderr on failure.
    pub fn ctl_ok(&self, i: usize, args: &[&str]) -> String {
        let o = self.ctl(i, args);
        if !o.status.success() {
            panic!("vswitchctl {args:?} failed: {}{}", String::from_utf8_lossy(&o.stderr), self.log_tail(i));
        }
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Runs vswitchctl expecting failure; returns stderr.
    pub fn ctl_err(&self, i: usize, args: &[&str]) -> String {
        let o = self.ctl(i, args);
        assert!(!o.status.success(), "vswitchctl {args:?} should have failed, printed {}", String::from_utf8_lossy(&o.stdout));
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// JSON output of a vswitchctl listing.
    pub fn ctl_json(&self, i: usize, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["--format", "json"]);
        serde_json::from_str(&self.ctl_ok(i, &a)).expect("json output")
    }

    pub fn log_tail(&self, i: usize) -> String {
        let l = std::fs::read_to_string(&self.daemons[i].log).unwrap_or_default();
        let lines: Vec<&str> = l.lines().collect();
        format!("\n--- vswitchd log (tail) ---\n{}", lines[lines.len().saturating_sub(30)..].join("\n"))
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            if let Some(mut c) = d.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        // Every namespace of this world: those the test made and the sandboxes the
        // daemon made (all carry the prefix). Processes the test started inside them
        // (servers, clients) are stopped first: a process keeps its namespace alive.
        let ours: Vec<String> = std::fs::read_dir("/run/netns")
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(&format!("{}-", self.prefix)))
                    .collect()
            })
            .unwrap_or_default();
        for n in &ours {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", n]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
                    // SAFETY: signalling, by PID, a process living in a namespace this test made.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        for n in &ours {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        // Files the daemon wrote for its sandboxes (`ip netns del` leaves them).
        if let Ok(rd) = std::fs::read_dir("/etc/netns") {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().starts_with(&format!("{}-", self.prefix)) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        if std::env::var("VSWITCHD_KEEP_TEST_DIR").is_err() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Hosts h1..hN with underlay addresses 198.19.0.N/24 on a bridge in namespace "ul".
pub fn underlay(w: &World, n: usize) -> Vec<(String, String)> {
    let ul = w.netns("ul");
    sh_ok(&format!("ip -n {ul} link add br0 type bridge && ip -n {ul} link set br0 up"));
    (1..=n)
        .map(|i| {
            let h = w.netns(&format!("h{i}"));
            let ip = format!("198.19.0.{i}");
            sh_ok(&format!("ip -n {h} link add ul0 type veth peer name p{i} netns {ul}"));
            sh_ok(&format!("ip -n {ul} link set p{i} master br0 && ip -n {ul} link set p{i} up"));
            sh_ok(&format!("ip -n {h} addr add {ip}/24 dev ul0 && ip -n {h} link set ul0 up"));
            (h, ip)
        })
        .collect()
}

/// Starts vswitchd in namespace `ns` with `args`, expecting it to refuse at start
/// (exit status 1, within 20 s); returns what it said on stderr.
pub fn daemon_refuses(ns: &str, state_dir: &Path, socket: &Path, args: &[&str]) -> String {
    let o = Command::new("timeout")
        .args(["20", "nsenter", &format!("--net=/run/netns/{ns}")])
        .arg(bin_dir().join("vswitchd"))
        .args(["--workers", "1", "--state-dir", &state_dir.display().to_string(), "--socket", &socket.display().to_string()])
        .args(args)
        .output()
        .expect("vswitchd");
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{args:?}: {e}");
    e
}

/// Runs a shell command; returns its output.
pub fn sh(cmd: &str) -> Output {
    Command::new("sh").arg("-c").arg(cmd).output().expect("sh")
}

/// Runs a shell command that must succeed; returns stdout.
pub fn sh_ok(cmd: &str) -> String {
    let o = sh(cmd);
    if !o.status.success() {
        panic!("`{cmd}` failed: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a command inside a namespace.
pub fn in_ns(ns: &str, cmd: &str) -> Output {
    sh(&format!("ip netns exec {ns} {cmd}"))
}

/// True when `ns` gets an answer from `ip` within a few tries.
pub fn ping(ns: &str, ip: &str) -> bool {
    for _ in 0..3 {
        if in_ns(ns, &format!("ping -c 1 -W 1 {ip}")).status.success() {
            return true;
        }
    }
    false
}

/// True when not a single ping from `ns` to `ip` is answered (2 tries, 1 s each).
pub fn no_ping(ns: &str, ip: &str) -> bool {
    !in_ns(ns, &format!("ping -c 2 -i 0.3 -W 1 {ip}")).status.success()
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs an iperf3 TCP test from `client_ns` to a server in `server_ns` at `ip`.
/// Returns the receiver's throughput in Gbit/s.
pub fn iperf3(client_ns: &str, server_ns: &str, ip: &str, secs: u32, extra: &str, dir: &Path) -> f64 {
    let pidf = dir.join(format!("iperf3-{server_ns}.pid"));
    sh_ok(&format!("ip netns exec {server_ns} iperf3 -s -1 -D -B {ip} --pidfile {}", pidf.display()));
    let up = wait_for(Duration::from_secs(10), || !in_ns(server_ns, "ss -Hltn 'sport = :5201'").stdout.is_empty());
    assert!(up, "iperf3 server did not start");
    let o = in_ns(client_ns, &format!("timeout {} iperf3 -c {ip} -t {secs} -J {extra}", secs + 20));
    if let Ok(pid) = std::fs::read_to_string(&pidf) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            // SAFETY: killing the iperf3 server we started (by its pidfile).
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    assert!(o.status.success(), "iperf3 failed: {}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("iperf3 json");
    v["end"]["sum_received"]["bits_per_second"].as_f64().unwrap_or(0.0) / 1e9
}
