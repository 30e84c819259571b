//! Tests against a real etcd: each test starts its own `etcd` on 127.0.0.1 with free
//! ports and a temporary data directory, and kills it (by PID) when done. Skipped with
//! a message when `etcd` is not installed, unless `VSWITCHD_E2E=1`.

use std::collections::HashSet;
use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// An etcd member owned by one test.
pub(crate) struct Server {
    dir: PathBuf,
    name: String,
    client_port: u16,
    peer_port: u16,
    /// `--initial-cluster`.
    cluster: String,
    child: Option<Child>,
}

static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A port nobody in this process has used yet and that is free right now.
fn free_port() -> u16 {
    let mut used = PORTS.lock().unwrap_or_else(|p| p.into_inner());
    let used = used.get_or_insert_with(HashSet::new);
    loop {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        if used.insert(port) {
            return port;
        }
    }
}

fn etcd_installed() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Server {
    /// Starts a fresh single-member cluster, or `None` (test skipped) if there is no
    /// `etcd` and `VSWITCHD_E2E` is not set.
    pub(crate) fn start(test: &str) -> Option<Server> {
        Server::cluster(test, 1).map(|mut v| v.remove(0))
    }

    /// Starts a fresh cluster of `n` members and waits until it has a leader.
    fn cluster(test: &str, n: usize) -> Option<Vec<Server>> {
        if !etcd_installed() {
            if std::env::var("VSWITCHD_E2E").as_deref() == Ok("1") {
                panic!("VSWITCHD_E2E=1 but the etcd binary is missing (Debian package etcd-server)");
            }
            eprintln!("skipping {test}: etcd is not installed (Debian package etcd-server)");
            return None;
        }
        let mut last = String::new();
        for _ in 0..3 {
            let base = std::env::temp_dir().join(format!(
                "vsw-etcd-{test}-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
            let cluster: Vec<String> =
                ports.iter().enumerate().map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}")).collect();
            let mut members: Vec<Server> = ports
                .iter()
                .enumerate()
                .map(|(i, &(client_port, peer_port))| Server {
                    dir: base.join(format!("m{i}")),
                    name: format!("m{i}"),
                    client_port,
                    peer_port,
                    cluster: cluster.join(","),
                    child: None,
                })
                .collect();
            let started = members.iter_mut().try_for_each(|m| {
                let _ = fs::remove_dir_all(&m.dir);
                fs::create_dir_all(&m.dir).unwrap();
                m.launch()
            });
            match started.and_then(|()| members.iter_mut().try_for_each(Server::wait_ready)) {
                Ok(()) => return Some(members),
                Err(e) => last = e, // e.g. a port taken meanwhile: try others
            }
            drop(members);
            let _ = fs::remove_dir_all(&base);
        }
        panic!("etcd did not start: {last}");
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts etcd again on its data directory and ports (after [`Server::kill9`]),
    /// and waits until it has a leader.
    fn restart(&mut self) {
        self.launch().unwrap();
        self.wait_ready().unwrap();
    }

    /// Starts the etcd process.
    fn launch(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new().create(true).append(true).open(self.dir.join("etcd.log")).unwrap();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", &self.name, "--data-dir"])
            .arg(self.dir.join("data"))
            .args(["--listen-client-urls", &self.url(), "--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.cluster])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning etcd: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    /// Waits until the member answers and knows a leader.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = self.url();
        loop {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return Err(format!("etcd {} exited with {st}: {}", self.name, self.log_tail()));
            }
            if let Ok(e) = Etcd::connect_timeout(&[&url], Duration::from_millis(500)) {
                if e.status().is_ok_and(|s| s.leader != 0) {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                self.kill9();
                return Err(format!("etcd {} not ready after 30 s: {}", self.name, self.log_tail()));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// `kill -9` the server (by PID) and reap it.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn client(&self) -> Etcd {
        Etcd::connect_timeout(&[&self.url()], Duration::from_secs(3)).unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(base) = self.dir.parent() {
            let _ = fs::remove_dir(base); // once the last member is gone
        }
    }
}

/// Retries `f` while it fails with a retryable error, for up to `secs` seconds.
fn retry<T>(secs: u64, mut f: impl FnMut() -> Result<T, EtcdError>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if e.is_retryable() && Instant::now() < deadline => thread::sleep(Duration::from_millis(100)),
            Err(e) => panic!("{e}"),
        }
    }
}

/// Polls `cond` every 50 ms for up to `secs` seconds.
fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// Runs a watch on a thread, sending its events to a channel.
struct Watcher {
    rx: mpsc::Receiver<WatchEvent>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<Result<(), EtcdError>>>,
}

impl Watcher {
    fn start(etcd: &Etcd, prefix: &str, rev: i64) -> Watcher {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s, p) = (etcd.clone(), stop.clone(), prefix.to_string());
        let thread = thread::spawn(move || e.watch_prefix(p, rev, &s, |ev| tx.send(ev).is_ok()));
        Watcher { rx, stop, thread: Some(thread) }
    }

    fn next(&self, secs: u64) -> WatchEvent {
        self.rx.recv_timeout(Duration::from_secs(secs)).expect("no watch event in time")
    }

    fn quiet(&self, ms: u64) -> bool {
        self.rx.recv_timeout(Duration::from_millis(ms)).is_err()
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let t0 = Instant::now();
        let r = self.thread.take().unwrap().join().unwrap();
        assert_eq!(r, Ok(()));
        assert!(t0.elapsed() < Duration::from_secs(2), "watch took {:?} to stop", t0.elapsed());
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn put_ev(ev: &WatchEvent) -> (&[u8], &[u8], i64) {
    match ev {
        WatchEvent::Put(kv) => (&kv.key, &kv.value, kv.mod_revision),
        other => panic!("expected a put, got {other:?}"),
    }
}

#[test]
fn kv_put_get_prefix_delete() {
    let Some(srv) = Server::start("kv") else { return };
    let etcd = srv.client();
    assert_eq!(etcd.get("/n/a").unwrap(), None);
    let r1 = etcd.put("/n/a", "1", None).unwrap();
    let r2 = etcd.put(b"/n/b\xff\x00", b"", None).unwrap();
    assert_eq!(r2, r1 + 1);
    etcd.put("/n/a", "2", None).unwrap();
    etcd.put("/o/c", "3", None).unwrap();
    let a = etcd.get("/n/a").unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.version, a.create_revision, a.lease), (&b"2"[..], 2, r1, 0));
    assert_eq!(etcd.get(b"/n/b\xff\x00").unwrap().unwrap().value, b"", "empty value");
    let (kvs, rev) = etcd.get_prefix("/n/").unwrap();
    let keys: Vec<&[u8]> = kvs.iter().map(|k| k.key.as_slice()).collect();
    assert_eq!(keys, vec![&b"/n/a"[..], b"/n/b\xff\x00"]);
    assert_eq!(rev, r2 + 2);
    assert_eq!(etcd.get_prefix("").unwrap().0.len(), 3, "empty prefix: every key");
    assert_eq!(etcd.count_prefix("/").unwrap(), (3, rev));
    assert_eq!(etcd.delete("/n/a").unwrap(), 1);
    assert_eq!(etcd.delete("/n/a").unwrap(), 0);
    assert_eq!(etcd.delete_prefix("/n/").unwrap(), 1);
    assert_eq!(etcd.get_prefix("/").unwrap().0.len(), 1);
    let st = etcd.status().unwrap();
    assert!(st.version.starts_with("3.") && st.leader != 0 && st.revision == rev + 2, "{st:?}");
    // A put on a lease that never existed.
    assert_eq!(etcd.put("/x", "1", Some(12345)), Err(EtcdError::LeaseNotFound));
    // Failover: a dead endpoint first.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let two = Etcd::connect_timeout(&[&dead, &srv.url()], Duration::from_secs(2)).unwrap();
    assert_eq!(two.get("/o/c").unwrap().unwrap().value, b"3");
    assert!(matches!(Etcd::connect_timeout(&[&dead], Duration::from_secs(1)), Err(EtcdError::Unavailable(_))));
}

#[test]
fn txn_create_race_has_one_winner() {
    let Some(srv) = Server::start("txn") else { return };
    let etcd = srv.client();
    const THREADS: usize = 8;
    const KEYS: usize = 20;
    let barrier = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (e, b) = (etcd.clone(), barrier.clone());
            thread::spawn(move || {
                b.wait();
                (0..KEYS).filter(|k| e.create(format!("/race/{k}"), format!("{t}"), None).unwrap()).collect::<Vec<_>>()
            })
        })
        .collect();
    let wins: Vec<Vec<usize>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for k in 0..KEYS {
        let winners: Vec<usize> = (0..THREADS).filter(|t| wins[*t].contains(&k)).collect();
        assert_eq!(winners.len(), 1, "key {k}: winners {winners:?}");
        let kv = etcd.get(format!("/race/{k}")).unwrap().unwrap();
        assert_eq!((kv.value, kv.version), (winners[0].to_string().into_bytes(), 1));
    }
    // Compare-and-set on the modification revision, with a read on failure.
    let kv = etcd.get("/race/0").unwrap().unwrap();
    let cas = |rev: i64| {
        Txn::new()
            .when(Compare::mod_revision_is("/race/0", rev))
            .and_then(Op::put("/race/0", "new", None))
            .or_else(Op::get("/race/0"))
    };
    let r = etcd.txn(&cas(kv.mod_revision)).unwrap();
    assert!(r.succeeded);
    assert_eq!(r.responses, vec![OpResponse::Put]);
    let r = etcd.txn(&cas(kv.mod_revision)).unwrap();
    assert!(!r.succeeded);
    assert_eq!(r.first_get()[0].value, b"new");
    assert_eq!(r.first_get()[0].mod_revision, r.revision);
    let r = etcd
        .txn(
            &Txn::new()
                .when(Compare::value_is("/race/0", "new"))
                .when(Compare::new("/race/1", CompareTarget::Version(1), CompareOp::Equal))
                .and_then(Op::DeletePrefix(b"/race/".to_vec()))
                .and_then(Op::GetPrefix(b"/race/".to_vec())),
        )
        .unwrap();
    assert!(r.succeeded);
    assert_eq!(r.responses, vec![OpResponse::Delete(KEYS as u64), OpResponse::Get(vec![])]);
}

#[test]
fn prefix_compare_holds_only_over_no_key() {
    let Some(srv) = Server::start("prefixcmp") else { return };
    let etcd = srv.client();
    // "/p/a" and "/pa" must not count for the prefix "/p/".
    etcd.put("/pa", "x", None).unwrap();
    etcd.put("/p", "x", None).unwrap();
    let guarded = |v: &str| Txn::new().when(Compare::none_with_prefix("/p/")).and_then(Op::put("/guard", v, None));
    assert!(etcd.txn(&guarded("1")).unwrap().succeeded, "no key under /p/ yet");
    etcd.put("/p/a/b", "x", None).unwrap();
    assert!(!etcd.txn(&guarded("2")).unwrap().succeeded, "a key under /p/ must fail the comparison");
    assert_eq!(etcd.get("/guard").unwrap().unwrap().value, b"1");
    etcd.delete_prefix("/p/").unwrap();
    assert!(etcd.txn(&guarded("3")).unwrap().succeeded);
    assert_eq!(etcd.get("/guard").unwrap().unwrap().value, b"3");
}

#[test]
fn lease_expiry_removes_keys() {
    let Some(srv) = Server::start("lease") else { return };
    let etcd = srv.client();
    let lease = etcd.grant_lease(1).unwrap();
    assert!(lease.ttl >= 1, "{lease:?}");
    etcd.put("/l/a", "1", Some(lease.id)).unwrap();
    assert_eq!(etcd.get("/l/a").unwrap().unwrap().lease, lease.id);
    let info = etcd.lease_ttl(lease.id).unwrap().unwrap();
    assert_eq!(info.keys, vec![b"/l/a".to_vec()]);
    assert!(info.ttl <= info.granted_ttl);
    assert!(etcd.keep_alive_once(lease.id).unwrap() > 0);
    let t0 = Instant::now();
    assert!(wait_for(10, || etcd.get("/l/a").unwrap().is_none()), "key outlived its lease");
    assert!(t0.elapsed() >= Duration::from_secs(1));
    assert_eq!(etcd.lease_ttl(lease.id).unwrap(), None);
    assert_eq!(etcd.keep_alive_once(lease.id), Err(EtcdError::LeaseNotFound));
    assert_eq!(etcd.put("/l/a", "1", Some(lease.id)), Err(EtcdError::LeaseNotFound));
    assert_eq!(etcd.revoke(lease.id), Err(EtcdError::LeaseNotFound));
    let l2 = etcd.grant_lease(30).unwrap();
    etcd.put("/l/b", "1", Some(l2.id)).unwrap();
    etcd.revoke(l2.id).unwrap();
    assert_eq!(etcd.get("/l/b").unwrap(), None, "revoke deletes at once");
}

#[test]
fn kept_lease_outlives_its_ttl_and_reports_loss() {
    let Some(srv) = Server::start("kept") else { return };
    let etcd = srv.client();
    let lost = Arc::new(AtomicBool::new(false));
    let l = lost.clone();
    let kept = KeptLease::grant(&etcd, 2, move || l.store(true, Ordering::SeqCst)).unwrap();
    etcd.put("/h/1", "me", Some(kept.id())).unwrap();
    thread::sleep(Duration::from_secs(5));
    assert!(etcd.get("/h/1").unwrap().is_some(), "key expired although the lease is kept");
    assert!(!kept.is_lost() && !lost.load(Ordering::SeqCst));
    // Someone else revokes it: the keeper notices at its next renewal.
    etcd.revoke(kept.id()).unwrap();
    assert_eq!(etcd.get("/h/1").unwrap(), None);
    assert!(wait_for(5, || lost.load(Ordering::SeqCst)), "loss not reported");
    assert!(kept.is_lost());
    drop(kept); // nothing to revoke any more; must not hang

    // Dropping a kept lease revokes it.
    let kept = KeptLease::grant(&etcd, 30, || {}).unwrap();
    etcd.put("/h/2", "me", Some(kept.id())).unwrap();
    let t0 = Instant::now();
    drop(kept);
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(etcd.get("/h/2").unwrap(), None);
    // And so does an explicit revoke, which reports the outcome.
    let kept = KeptLease::grant(&etcd, 30, || {}).unwrap();
    let id = kept.id();
    kept.revoke().unwrap();
    assert_eq!(etcd.lease_ttl(id).unwrap(), None);
}

#[test]
fn watch_sees_puts_and_deletes_in_order() {
    let Some(srv) = Server::start("watch") else { return };
    let etcd = srv.client();
    etcd.put("/w/old", "0", None).unwrap();
    let (_, rev) = etcd.get_prefix("/w/").unwrap();
    let w = Watcher::start(&etcd, "/w/", rev + 1);
    let now = Watcher::start(&etcd, "/w/", 0);
    thread::sleep(Duration::from_millis(300)); // let the "from now" watch be created
    let ra = etcd.put("/w/a", "1", None).unwrap();
    etcd.put("/x/ignored", "1", None).unwrap();
    let rb = etcd.put("/w/b", "2", None).unwrap();
    etcd.delete("/w/a").unwrap();
    let t = etcd.txn(&Txn::new().and_then(Op::put("/w/c", "3", None)).and_then(Op::delete("/w/old"))).unwrap();
    for w in [&w, &now] {
        assert_eq!(put_ev(&w.next(5)), (&b"/w/a"[..], &b"1"[..], ra));
        assert_eq!(put_ev(&w.next(5)), (&b"/w/b"[..], &b"2"[..], rb));
        assert_eq!(w.next(5), WatchEvent::Delete { key: b"/w/a".to_vec(), mod_revision: rb + 1 });
        assert_eq!(put_ev(&w.next(5)), (&b"/w/c"[..], &b"3"[..], t.revision));
        assert_eq!(w.next(5), WatchEvent::Delete { key: b"/w/old".to_vec(), mod_revision: t.revision });
        assert!(w.quiet(300));
    }
    w.stop();
    now.stop();
    // A callback returning false ends the watch.
    let mut n = 0;
    etcd.watch_prefix("/w/", 1, &AtomicBool::new(false), |_| {
        n += 1;
        n < 3
    })
    .unwrap();
    assert_eq!(n, 3);
}

#[test]
fn watch_survives_an_etcd_restart() {
    let Some(mut srv) = Server::start("restart") else { return };
    let etcd = srv.client();
    let (_, rev) = etcd.get_prefix("/r/").unwrap();
    let w = Watcher::start(&etcd, "/r/", rev + 1);
    let r1 = etcd.put("/r/1", "before", None).unwrap();
    assert_eq!(put_ev(&w.next(5)).2, r1);
    srv.kill9();
    assert!(matches!(etcd.put("/r/x", "down", None), Err(EtcdError::Unavailable(_))));
    thread::sleep(Duration::from_millis(1500)); // the watch is retrying meanwhile
    srv.restart();
    // The client's pooled connections died with the old process: still works.
    let r2 = etcd.put("/r/2", "after", None).unwrap();
    assert_eq!(put_ev(&w.next(10)), (&b"/r/2"[..], &b"after"[..], r2));
    let r3 = etcd.put("/r/3", "later", None).unwrap();
    assert_eq!(put_ev(&w.next(5)).2, r3);
    assert!(w.quiet(300), "an event was delivered twice");
    w.stop();
}

#[test]
fn watch_resyncs_when_the_store_lost_its_data() {
    let Some(mut srv) = Server::start("wiped") else { return };
    let etcd = srv.client();
    for i in 0..20 {
        etcd.put(format!("/w/{i}"), "old", None).unwrap();
    }
    let (_, rev) = etcd.get_prefix("/w/").unwrap();
    let w = Watcher::start(&etcd, "/w/", rev + 1);
    assert!(w.quiet(300));
    // The member comes back on an empty data directory: revisions start again at 1,
    // below what the watch already asked for. Waiting for revision rev+1 of the new
    // store would miss everything written until then.
    srv.kill9();
    fs::remove_dir_all(srv.dir.join("data")).unwrap();
    srv.restart();
    let r = etcd.put("/w/new", "after", None).unwrap();
    assert!(r < rev, "the new store starts over ({r} vs {rev})");
    match w.next(10) {
        WatchEvent::Resync { kvs, revision } => {
            assert!(revision < rev);
            let keys: Vec<&[u8]> = kvs.iter().map(|kv| kv.key.as_slice()).collect();
            assert!(keys.iter().all(|k| *k == b"/w/new"), "only what the new store holds: {keys:?}");
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    let r2 = etcd.put("/w/later", "x", None).unwrap();
    // (The resync may have been read before or after /w/new: its put event may follow.)
    let mut seen = w.next(5);
    if put_ev(&seen).0 == b"/w/new" {
        seen = w.next(5);
    }
    assert_eq!(put_ev(&seen), (&b"/w/later"[..], &b"x"[..], r2));
    w.stop();
}

#[test]
fn watch_resyncs_after_compaction() {
    let Some(srv) = Server::start("compact") else { return };
    let etcd = srv.client();
    let r1 = etcd.put("/c/a", "1", None).unwrap();
    etcd.put("/c/b", "2", None).unwrap();
    etcd.delete("/c/a").unwrap();
    let last = etcd.put("/c/b", "3", None).unwrap();
    etcd.compact(last).unwrap();
    // A watcher that stopped at r1 cannot be told what happened since: it gets the
    // current content instead.
    let w = Watcher::start(&etcd, "/c/", r1 + 1);
    match w.next(5) {
        WatchEvent::Resync { kvs, revision } => {
            assert_eq!(revision, last);
            assert_eq!(kvs.len(), 1);
            assert_eq!((kvs[0].key.as_slice(), kvs[0].value.as_slice()), (&b"/c/b"[..], &b"3"[..]));
        }
        other => panic!("expected a resync, got {other:?}"),
    }
    let r = etcd.put("/c/c", "4", None).unwrap();
    assert_eq!(put_ev(&w.next(5)).2, r);
    assert!(w.quiet(300));
    w.stop();
}

#[test]
fn cluster_fails_over_between_members() {
    let Some(mut m) = Server::cluster("failover", 3) else { return };
    let urls: Vec<String> = m.iter().map(Server::url).collect();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let etcd = Etcd::connect_timeout(&urls, Duration::from_secs(2)).unwrap();
    let w = Watcher::start(&etcd, "/f/", 0);
    thread::sleep(Duration::from_millis(300));
    let r1 = etcd.put("/f/1", "a", None).unwrap();
    assert_eq!(put_ev(&w.next(5)).2, r1);
    // The member in use goes away: calls and the watch move on to the others (once
    // they have elected a new leader, if it was the leader).
    m[0].kill9();
    let r2 = retry(15, || etcd.put("/f/2", "b", None));
    assert_eq!(put_ev(&w.next(15)), (&b"/f/2"[..], &b"b"[..], r2));
    // Without a quorum the survivor answers "no leader" at once instead of hanging.
    m[1].kill9();
    thread::sleep(Duration::from_secs(3));
    let t0 = Instant::now();
    let e = etcd.get("/f/2").unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{e} after {:?}", t0.elapsed());
    // Quorum back: everything resumes, the watch included.
    m[0].launch().unwrap();
    m[1].launch().unwrap();
    m[0].wait_ready().unwrap();
    let r3 = retry(15, || etcd.put("/f/3", "c", None));
    assert_eq!(put_ev(&w.next(15)).2, r3);
    assert!(w.quiet(300));
    w.stop();
}
