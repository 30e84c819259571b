//! The API server: a Unix socket, one thread per client connection, one JSON request
//! per line. Requests run one at a time under the controller's mutex; a panic while
//! handling one becomes an error response, never the daemon's death.
//!
//! Bounded: at most [`MAX_CLIENTS`] connections at once (one more is answered with a
//! one-line error and closed), a client that sends nothing for [`IDLE`] is dropped, and
//! when accept fails (no descriptors left) the loop pauses instead of spinning.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::api::{Request, Response};
use crate::controller::Controller;

const MAX_LINE: u64 = 1 << 20;
/// Most API connections served at once.
pub const MAX_CLIENTS: usize = 128;
/// A connection that sends no request for this long is closed.
const IDLE: Duration = Duration::from_secs(30);
/// Pause after a failed accept (descriptor table full: accept fails at once, so
/// retrying without a pause spins).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The API socket, bound but not yet served: a daemon claims it before it touches any
/// kernel object, so a second daemon pointed at the same socket stops before it can
/// disturb the first. The file is removed when this (or the served socket) is dropped.
pub struct ApiSocket {
    listener: UnixListener,
    path: SocketFile,
}

/// Removes the socket file when dropped (at shutdown or on a failed start).
pub struct SocketFile(PathBuf);

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Why `socket` cannot be ours: another daemon listens on it (named by its pid and state
/// directory when it answers a ping). `None` when nothing listens there.
fn in_use(socket: &Path) -> Option<String> {
    UnixStream::connect(socket).ok()?;
    let who = match crate::api::call(socket, &Request::Ping, std::time::Duration::from_secs(1)) {
        Ok(v) => format!(" (pid {}, state dir {})", v["pid"], v["state_dir"].as_str().unwrap_or("?")),
        Err(_) => String::new(),
    };
    Some(format!("another vswitchd{who} is listening on {}", socket.display()))
}

/// Binds the socket, refusing if another daemon answers on it (a stale file left by a
/// daemon that died is replaced).
pub fn bind(socket: &Path) -> io::Result<ApiSocket> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if socket.exists() {
        if let Some(who) = in_use(socket) {
            return Err(io::Error::new(io::ErrorKind::AddrInUse, who));
        }
        std::fs::remove_file(socket)?;
    }
    let listener = UnixListener::bind(socket)?;
    let path = SocketFile(socket.to_path_buf());
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    Ok(ApiSocket { listener, path })
}

impl ApiSocket {
    /// Serves the socket from a background thread (clients that connected since the
    /// bind were queued and are answered now). The returned guard removes the file.
    pub fn serve(self, ctl: Arc<Mutex<Controller>>) -> io::Result<SocketFile> {
        let ApiSocket { listener, path } = self;
        std::thread::Builder::new().name("vsw-api".into()).spawn(move || {
            let clients = Arc::new(AtomicUsize::new(0));
            let (mut failed, mut warned) = (0u64, None::<Instant>);
            for conn in listener.incoming() {
                match conn {
                    Ok(s) => {
                        if clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
                            clients.fetch_sub(1, Ordering::AcqRel);
                            let _ = respond(&s, &Response::err(format!("too many API clients ({MAX_CLIENTS} connected): try again")));
                            continue;
                        }
                        let (ctl, n) = (ctl.clone(), clients.clone());
                        let spawned = std::thread::Builder::new().name("vsw-api-conn".into()).spawn(move || {
                            client(s, ctl);
                            n.fetch_sub(1, Ordering::AcqRel);
                        });
                        if spawned.is_err() {
                            clients.fetch_sub(1, Ordering::AcqRel);
                        }
                    }
                    Err(e) => {
                        // One warning per 10 s with the count, not one per failure.
                        failed += 1;
                        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                            warn!(error = %e, failed, "accept (API clients wait)");
                            (failed, warned) = (0, Some(Instant::now()));
                        }
                        std::thread::sleep(ACCEPT_PAUSE);
                    }
                }
            }
        })?;
        Ok(path)
    }
}

fn client(s: UnixStream, ctl: Arc<Mutex<Controller>>) {
    let _ = s.set_read_timeout(Some(IDLE));
    let w = &s;
    let mut r = BufReader::new(&s);
    loop {
        // Bytes, not a String: a line that is not UTF-8 gets an error answer like any
        // other malformed request instead of ending the connection.
        let mut line = Vec::new();
        match (&mut r).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if !line.ends_with(b"\n") && line.len() as u64 >= MAX_LINE {
            let _ = respond(w, &Response::err("request too long"));
            return;
        }
        let resp = match serde_json::from_slice::<Request>(line.trim_ascii()) {
            Err(e) => Response::err(format!("bad request: {e}")),
            Ok(req) => {
                debug!(?req, "request");
                let outcome = catch_unwind(AssertUnwindSafe(|| {
                    let mut c = ctl.lock().unwrap_or_else(|p| p.into_inner());
                    c.handle(req)
                }));
                match outcome {
                    Ok(Ok(v)) => Response::ok(v),
                    Ok(Err(e)) => Response::err(e),
                    Err(_) => Response::err("internal error while handling the request (see the daemon's log)"),
                }
            }
        };
        if respond(w, &resp).is_err() {
            return;
        }
    }
}

fn respond(mut w: &UnixStream, r: &Response) -> io::Result<()> {
    let mut v = serde_json::to_vec(r).map_err(io::Error::other)?;
    v.push(b'\n');
    w.write_all(&v)
}
