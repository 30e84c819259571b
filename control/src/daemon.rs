//! `vswitchd` start-up and shutdown: enter the requested namespace, lock and load the
//! state directory, start the workers, reconcile, serve the API, age MAC tables, and
//! stop cleanly on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::info;

use crate::controller::Controller;
use crate::dp::{Dp, DpConfig};
use crate::netns::Netns;
use crate::store::FileStore;

/// Options of the daemon (the `vswitchd` command line).
#[derive(Clone, Debug)]
pub struct DaemonOpts {
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    /// Run inside /run/netns/NAME instead of the caller's namespace.
    pub netns: Option<String>,
    pub dp: DpConfig,
    pub ctl: crate::controller::CtlOpts,
    /// The encrypted mesh, if this host is in one.
    pub mesh: Option<MeshCli>,
}

/// The mesh options of `vswitchd`.
#[derive(Clone, Debug)]
pub struct MeshCli {
    /// UDP port of the mesh socket.
    pub port: u16,
    /// Members to join (`--mesh-peer`).
    pub join: Vec<std::net::SocketAddr>,
    /// The mesh password: peers proving it are admitted.
    pub password: Option<String>,
    /// Public keys admitted without the password.
    pub allow: Vec<[u8; 32]>,
    /// False when unsolicited inbound UDP cannot reach this host.
    pub inbound: bool,
    pub keepalive: Duration,
    /// Session age that triggers a rekey (the session dies at 1.5 times this).
    pub rekey_after: Duration,
}

/// Loads this host's mesh key from `dir/mesh.key`, or makes one (mode 0600).
pub fn mesh_identity(dir: &std::path::Path) -> Result<dataplane::mesh::Identity, String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("mesh.key");
    match std::fs::read_to_string(&path) {
        Ok(s) => dataplane::mesh::Identity::from_secret_base64(s.trim()).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = dataplane::mesh::Identity::generate().map_err(|e| format!("mesh key: {e}"))?;
            let tmp = dir.join("mesh.key.tmp");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| format!("{}: {e}", tmp.display()))?;
            f.write_all(format!("{}\n", id.secret_base64()).as_bytes()).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
            info!(key = %id.public_base64(), path = %path.display(), "made this host's mesh key");
            Ok(id)
        }
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// Frames queued from the workers to the mesh agent; each worker's queue of decrypted
/// frames holds depth / workers (at least 256), the spare-buffer queue twice the depth.
/// Frames are up to 64 KiB, so this bounds the mesh's buffers at about
/// (2 + 2) x 1024 x 64 KiB = 256 MiB in the worst case (4096 allowed four times that).
const MESH_QUEUE_DEPTH: usize = 1024;

/// Starts the mesh agent and connects it to the workers.
fn start_mesh(m: &MeshCli, ctl: &mut Controller, state_dir: &std::path::Path) -> Result<crossbeam_channel::Receiver<crate::meshd::MeshEvent>, String> {
    for a in &m.join {
        if let std::net::IpAddr::V4(ip) = a.ip() {
            ctl.check_mesh_member(ip).map_err(|e| format!("--mesh-peer {a}: {e}"))?;
        }
    }
    let identity = mesh_identity(state_dir)?;
    let cfg = dataplane::mesh::MeshConfig {
        psk: m.password.as_deref().map(dataplane::mesh::psk_from_password),
        allowed: m.allow.clone(),
        allow_any_with_psk: m.password.is_some(),
        keepalive: Some(m.keepalive),
        rekey_after: m.rekey_after,
        reject_after: m.rekey_after * 3 / 2 + Duration::from_secs(1),
        wall_clock: Some(dataplane::mesh::WallClock {
            unix: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default(),
            at: std::time::Instant::now(),
        }),
        ..Default::default()
    };
    cfg.validate().map_err(|e| format!("mesh settings: {e:?}"))?;
    let ip = ctl.opts.advertise.map(std::net::IpAddr::V4).unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let listen = std::net::SocketAddr::new(ip, m.port);
    let (agent, workers) = dataplane::port::meshlink::link(MESH_QUEUE_DEPTH, ctl.dp.workers()).map_err(|e| format!("mesh link: {e}"))?;
    ctl.dp.attach_mesh(workers).map_err(|e| format!("mesh port: {e}"))?;
    let opts = crate::meshd::MeshOpts { listen, identity, cfg, join: m.join.clone(), can_accept_inbound: m.inbound };
    let h = crate::meshd::start(opts, agent).map_err(|e| format!("--mesh-port {}: {e}", m.port))?;
    info!(key = %dataplane::mesh::key_to_base64(&h.public), listen = %listen, members = ?m.join, "mesh agent started");
    let events = h.events.clone();
    ctl.set_mesh(Arc::new(h));
    Ok(events)
}

fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local set; the mask is inherited by every thread
    // started afterwards, so only `sigwait` in the main thread sees these signals.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        // A client that disconnects mid-reply must not kill us.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        set
    }
}

fn wait_signal(set: &libc::sigset_t) -> i32 {
    loop {
        let mut sig = 0;
        // SAFETY: valid set and output pointer.
        if unsafe { libc::sigwait(set, &mut sig) } == 0 && sig != libc::SIGHUP {
            return sig;
        }
    }
}

/// Follows the cluster store once joined: a thread watches it (every change applied
/// under the controller's lock, a resynchronisation after a broken watch) and the
/// keeper renews this host's lease, registering again after a loss.
fn follow_cluster(cluster: Arc<crate::cluster::Cluster>, rev: i64, ctl: Arc<Mutex<Controller>>, stop: Arc<std::sync::atomic::AtomicBool>) -> std::io::Result<()> {
    let (c, w, st) = (cluster.clone(), ctl.clone(), stop.clone());
    std::thread::Builder::new().name("vsw-cluster-watch".into()).spawn(move || {
        let mut rev = rev;
        while !st.load(std::sync::atomic::Ordering::SeqCst) {
            let r = c.watch(rev, &st, |ch| w.lock().unwrap_or_else(|p| p.into_inner()).apply(ch));
            if st.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            if let Err(e) = r {
                tracing::warn!(error = %e, "cluster watch ended; resynchronising");
            }
            std::thread::sleep(Duration::from_secs(1));
            match w.lock().unwrap_or_else(|p| p.into_inner()).cluster_sync() {
                Ok(r) => rev = r,
                Err(e) => tracing::warn!(error = %e, "cluster resync"),
            }
        }
    })?;
    // A lost lease: etcd was away for longer than its TTL, or lost its data (then the
    // networks are defined again too): a whole sync, which publishes the endpoints.
    crate::cluster::keeper(cluster, stop, move || {
        if let Err(e) = ctl.lock().unwrap_or_else(|p| p.into_inner()).cluster_sync() {
            tracing::warn!(error = %e, "cluster sync after the lease was renewed");
        }
    });
    Ok(())
}

/// The abstract Unix socket name that marks a network namespace as served.
const NAMESPACE_CLAIM: &[u8] = b"vswitchd/namespace";

/// One daemon per network namespace. A starting daemon removes the switch-side links
/// its state does not know (orphans of a crash), so a second daemon in the same
/// namespace, even with its own state directory and socket, would take the first one's
/// links for orphans. The claim is an abstract Unix socket: it belongs to the network
/// namespace and goes away with the process holding it (nothing stale after kill -9).
/// The holder answers whoever connects with its pid, state directory and socket, so the
/// refusal can say who is there.
fn claim_namespace(state_dir: &std::path::Path, socket: &std::path::Path) -> Result<(), String> {
    use std::io::{Read, Write};
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
    let addr = SocketAddr::from_abstract_name(NAMESPACE_CLAIM).map_err(|e| format!("namespace claim: {e}"))?;
    match UnixListener::bind_addr(&addr) {
        Ok(l) => {
            let who = format!("pid {}, state dir {}, socket {}", std::process::id(), state_dir.display(), socket.display());
            std::thread::Builder::new()
                .name("vsw-claim".into())
                .spawn(move || {
                    for mut c in l.incoming().flatten() {
                        let _ = c.write_all(who.as_bytes());
                    }
                })
                .map_err(|e| format!("namespace claim: {e}"))?;
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            let mut who = String::new();
            if let Ok(s) = UnixStream::connect_addr(&addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let _ = s.take(1024).read_to_string(&mut who);
            }
            if who.is_empty() {
                who = "it does not answer: a vswitchd that was killed may still be exiting; try again in a few seconds".into();
            }
            Err(format!("another vswitchd runs in this network namespace ({who}): one daemon per namespace; stop it first, or run this one in another namespace with --netns"))
        }
        Err(e) => Err(format!("namespace claim: {e}")),
    }
}

/// Runs the daemon until a signal stops it.
pub fn run(opts: DaemonOpts) -> Result<(), String> {
    let set = block_signals();
    let nofile = crate::proxy::raise_descriptor_limit();
    if let Some(ns) = &opts.netns {
        let h = Netns::open_named(ns).map_err(|e| format!("--netns {ns}: {e}"))?;
        // SAFETY: setns on the main thread before any other thread exists.
        if unsafe { libc::setns(h.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("--netns {ns}: {}", std::io::Error::last_os_error()));
        }
    }
    // Claim the namespace, the state directory and the API socket before touching any
    // kernel object: a second daemon must stop here, not after its reconcile has taken
    // the first one's links for orphans.
    claim_namespace(&opts.state_dir, &opts.socket)?;
    // The socket before the state directory: a daemon refused for the socket makes no
    // directory, and one refused for the directory removes the socket it bound.
    let api = crate::server::bind(&opts.socket).map_err(|e| format!("socket {}: {e}", opts.socket.display()))?;
    let store = FileStore::open(&opts.state_dir).map_err(|e| format!("state directory {}: {e}", opts.state_dir.display()))?;
    let state = store.load().map_err(|e| format!("loading state: {e}"))?;
    info!(state_dir = %opts.state_dir.display(), workers = opts.dp.workers, open_files = ?nofile, "starting");
    let dp = Dp::start(opts.dp.clone()).map_err(|e| format!("starting workers: {e}"))?;
    let mut ctl = Controller::new(store, dp, state).map_err(|e| format!("netlink: {e}"))?;
    ctl.opts = opts.ctl.clone();
    ctl.check_host_options()?;
    ctl.check_cluster_membership()?;
    let mesh_events = match &opts.mesh {
        Some(m) => Some(start_mesh(m, &mut ctl, &opts.state_dir)?),
        None => None,
    };
    ctl.reconcile();
    ctl.start_dns();
    if opts.ctl.leave_cluster {
        ctl.leave_cluster();
    }
    // The cluster store. A store that cannot be reached at start is no reason to leave
    // the host's sandboxes without a switch: the daemon forwards on its saved state
    // (local networks fully, overlay networks without remote endpoints), refuses overlay
    // changes, and joins in the background once the store answers.
    let mut join_later = None;
    let joined = match &opts.ctl.cluster {
        Some(url) => match ctl.join_cluster(url) {
            Ok(j) => Some(j),
            Err(e) if ctl.dp.advertise().is_some() => {
                tracing::warn!(store = %url, error = %e, "cluster store unreachable: local networks forward on the saved state; overlay networks reach no other host and overlay changes are refused until it is joined; retrying every 2 s");
                join_later = Some(url.clone());
                None
            }
            Err(e) => return Err(format!("--cluster {url}: {e}")),
        },
        None => None,
    };
    let ctl = Arc::new(Mutex::new(ctl));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some((cluster, rev)) = joined {
        follow_cluster(cluster, rev, ctl.clone(), stop.clone()).map_err(|e| e.to_string())?;
    }
    if let Some(url) = join_later {
        let (w, st) = (ctl.clone(), stop.clone());
        std::thread::Builder::new()
            .name("vsw-cluster-join".into())
            .spawn(move || {
                while !st.load(std::sync::atomic::Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_secs(2));
                    let r = w.lock().unwrap_or_else(|p| p.into_inner()).join_cluster(&url);
                    match r {
                        Ok((cluster, rev)) => {
                            info!(store = %url, "joined the cluster store after all");
                            if let Err(e) = follow_cluster(cluster, rev, w.clone(), st.clone()) {
                                tracing::error!(error = %e, "cluster watch thread");
                            }
                            return;
                        }
                        Err(e) => tracing::debug!(error = %e, "cluster store still unreachable"),
                    }
                }
            })
            .map_err(|e| e.to_string())?;
    }
    if let Some(ev) = mesh_events {
        // Peers coming and going add and remove the encrypted networks' ports.
        let w = ctl.clone();
        std::thread::Builder::new()
            .name("vsw-mesh-events".into())
            .spawn(move || {
                while let Ok(e) = ev.recv() {
                    w.lock().unwrap_or_else(|p| p.into_inner()).mesh_event(e);
                }
            })
            .map_err(|e| e.to_string())?;
    }
    let sock = api.serve(ctl.clone()).map_err(|e| format!("socket {}: {e}", opts.socket.display()))?;
    info!(socket = %sock.path().display(), "listening");

    let hk = ctl.clone();
    let (conntrack, neigh) = ctl.lock().unwrap_or_else(|p| p.into_inner()).router_tables();
    std::thread::Builder::new()
        .name("vsw-housekeeping".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let (work, gone) = {
                let mut c = hk.lock().unwrap_or_else(|p| p.into_inner());
                c.check_ports();
                (c.aging_work(), c.take_gone_addrs())
            };
            if !gone.is_empty() {
                let n = conntrack.remove_involving(&gone);
                tracing::debug!(addresses = ?gone, removed = n, "connections of removed endpoints forgotten");
            }
            let now = dataplane::clock::now_secs();
            for (fdb, aging) in work {
                fdb.age_step(now, aging);
            }
            // Expired and flushed connections, a bounded slice per second (the whole
            // table every few seconds at the default size), and stale neighbours.
            conntrack.sweep(now, 65_536);
            neigh.age_out(dataplane::clock::now_ms());
        })
        .map_err(|e| e.to_string())?;

    let sig = wait_signal(&set);
    info!(signal = sig, "stopping");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    drop(sock);
    // Other threads (API, housekeeping, cluster watch, mesh events) share the
    // controller; a request in progress finishes first, then the workers stop and are
    // joined under the lock.
    ctl.lock().unwrap_or_else(|p| p.into_inner()).dp.stop();
    info!("stopped");
    Ok(())
}

