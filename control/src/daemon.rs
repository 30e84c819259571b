//! `vswitchd` start-up and shutdown: enter the requested namespace, lock and load the
//! state directory, start the workers, reconcile, serve the API, age MAC tables, and
//! stop cleanly on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{error, info};

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

/// Runs the daemon until a signal stops it.
pub fn run(opts: DaemonOpts) -> Result<(), String> {
    let set = block_signals();
    if let Some(ns) = &opts.netns {
        let h = Netns::open_named(ns).map_err(|e| format!("--netns {ns}: {e}"))?;
        // SAFETY: setns on the main thread before any other thread exists.
        if unsafe { libc::setns(h.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(format!("--netns {ns}: {}", std::io::Error::last_os_error()));
        }
    }
    let store = FileStore::open(&opts.state_dir).map_err(|e| format!("state directory {}: {e}", opts.state_dir.display()))?;
    let state = store.load().map_err(|e| format!("loading state: {e}"))?;
    info!(state_dir = %opts.state_dir.display(), workers = opts.dp.workers, "starting");
    let dp = Dp::start(opts.dp.clone()).map_err(|e| format!("starting workers: {e}"))?;
    let mut ctl = Controller::new(store, dp, state).map_err(|e| format!("netlink: {e}"))?;
    ctl.opts = opts.ctl.clone();
    ctl.reconcile();
    ctl.start_dns();
    let joined = match &opts.ctl.cluster {
        Some(url) => Some(ctl.join_cluster(url).map_err(|e| format!("--cluster {url}: {e}"))?),
        None => None,
    };
    let ctl = Arc::new(Mutex::new(ctl));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if let Some((cluster, rev)) = joined {
        // Watch the store: every change is applied under the controller's lock.
        let (c, w, st) = (cluster.clone(), ctl.clone(), stop.clone());
        std::thread::Builder::new()
            .name("vsw-cluster-watch".into())
            .spawn(move || {
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
            })
            .map_err(|e| e.to_string())?;
        let k = ctl.clone();
        crate::cluster::keeper(cluster, stop.clone(), move || k.lock().unwrap_or_else(|p| p.into_inner()).republish_local());
    }
    let sock = crate::server::serve(&opts.socket, ctl.clone()).map_err(|e| format!("socket {}: {e}", opts.socket.display()))?;
    info!(socket = %sock.display(), "listening");

    let hk = ctl.clone();
    let (conntrack, neigh) = ctl.lock().unwrap_or_else(|p| p.into_inner()).router_tables();
    std::thread::Builder::new()
        .name("vsw-housekeeping".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let work = hk.lock().unwrap_or_else(|p| p.into_inner()).aging_work();
            let now = dataplane::clock::now_secs();
            for (fdb, aging) in work {
                fdb.age_out(now, aging);
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
    let _ = std::fs::remove_file(&sock);
    let c = match Arc::try_unwrap(ctl) {
        Ok(m) => Some(m.into_inner().unwrap_or_else(|p| p.into_inner())),
        Err(_) => None,
    };
    match c {
        Some(c) => c.dp.stop(),
        None => {
            // API threads still hold the controller: stop the workers through it.
            error!("API clients still connected at shutdown; exiting without joining workers");
        }
    }
    info!("stopped");
    Ok(())
}

