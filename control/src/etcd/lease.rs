//! Leases: grant, keepalive, revoke, time-to-live, and [`KeptLease`], a lease renewed
//! by a background thread until it is dropped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::client::{decode, server_error, Etcd, Idempotent};
use super::http::{Conn, HttpError, JsonSplitter};
use super::wire::{self, LeaseRequest};
use super::EtcdError;

/// A granted lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Lease ID, to attach keys with ([`Etcd::put`], [`super::Op::Put`]).
    pub id: i64,
    /// Time to live in seconds granted by the server (at least etcd's minimum, 2 s
    /// with default settings, whatever was asked for).
    pub ttl: i64,
}

/// What [`Etcd::lease_ttl`] reports about a live lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Seconds left before it expires.
    pub ttl: i64,
    /// The time to live it was granted with.
    pub granted_ttl: i64,
    /// Keys attached to it.
    pub keys: Vec<Vec<u8>>,
}

impl Etcd {
    /// Grants a lease of `ttl_secs` seconds. Keys put with its ID are deleted when it
    /// expires or is revoked.
    pub fn grant_lease(&self, ttl_secs: i64) -> Result<Lease, EtcdError> {
        let r: wire::LeaseResponse =
            self.call("/v3/lease/grant", &LeaseRequest { TTL: ttl_secs, ..Default::default() }, Idempotent::No)?;
        if !r.error.is_empty() {
            return Err(EtcdError::Server { code: 0, message: r.error });
        }
        if r.ID == 0 || r.TTL <= 0 {
            return Err(EtcdError::Protocol(format!("lease grant returned ID {} TTL {}", r.ID, r.TTL)));
        }
        Ok(Lease { id: r.ID, ttl: r.TTL })
    }

    /// Renews lease `id` once; returns its new time to live in seconds (positive).
    /// [`EtcdError::LeaseNotFound`] if it has expired or was revoked.
    pub fn keep_alive_once(&self, id: i64) -> Result<i64, EtcdError> {
        // The keepalive endpoint is a stream: one answer per request object, then the
        // end of the stream (with trailers) once the request body is done.
        let body = serde_json::to_vec(&LeaseRequest { ID: id, ..Default::default() })
            .map_err(|e| EtcdError::Protocol(e.to_string()))?;
        let mut errors = Vec::new();
        for ep in self.endpoint_order() {
            let url = &self.inner.endpoints[ep].url;
            match self.keep_alive_on(ep, &body) {
                Ok(Ok(r)) => {
                    self.prefer(ep);
                    return if r.TTL > 0 { Ok(r.TTL) } else { Err(EtcdError::LeaseNotFound) };
                }
                Ok(Err(e)) => {
                    if e.is_retryable() {
                        self.avoid(ep);
                    }
                    return Err(e);
                }
                Err(HttpError::Protocol(m)) => return Err(EtcdError::Protocol(format!("{url}: {m}"))),
                Err(HttpError::Io(e)) => errors.push(format!("{url}: {e}")),
            }
        }
        Err(EtcdError::Unavailable(errors.join("; ")))
    }

    /// One keepalive exchange on a new connection to endpoint `ep`.
    fn keep_alive_on(&self, ep: usize, body: &[u8]) -> Result<Result<wire::LeaseResponse, EtcdError>, HttpError> {
        let mut c = Conn::connect(&self.inner.endpoints[ep], self.inner.timeout)?;
        c.send("/v3/lease/keepalive", body)?;
        let head = c.read_head()?;
        let (data, _) = c.read_body(&head)?;
        if head.status != 200 {
            return Ok(decode::<wire::LeaseResponse>("/v3/lease/keepalive", head.status, &data));
        }
        let mut split = JsonSplitter::default();
        split.push(&data);
        let Some(first) = split.next_object().map_err(HttpError::Protocol)? else {
            return Err(HttpError::Protocol("keepalive stream ended without an answer".into()));
        };
        let msg: wire::StreamMessage<wire::LeaseResponse> =
            serde_json::from_slice(&first).map_err(|e| HttpError::Protocol(format!("keepalive answer: {e}")))?;
        Ok(match msg {
            wire::StreamMessage { error: Some(e), .. } => {
                Err(server_error(if e.grpc_code != 0 { e.grpc_code } else { e.code }, e.message))
            }
            wire::StreamMessage { result: Some(r), .. } => Ok(r),
            _ => Err(EtcdError::Protocol("keepalive answer without result or error".into())),
        })
    }

    /// Revokes lease `id`, deleting the keys attached to it.
    /// [`EtcdError::LeaseNotFound`] if it had already expired or been revoked.
    pub fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        let _: wire::LeaseResponse =
            self.call("/v3/lease/revoke", &LeaseRequest { ID: id, ..Default::default() }, Idempotent::Yes)?;
        Ok(())
    }

    /// The remaining time to live of lease `id` and its keys, or `None` if it does not
    /// exist (expired, revoked, never granted).
    pub fn lease_ttl(&self, id: i64) -> Result<Option<LeaseInfo>, EtcdError> {
        let req = LeaseRequest { ID: id, keys: true, ..Default::default() };
        let r: wire::LeaseResponse = self.call("/v3/lease/timetolive", &req, Idempotent::Yes)?;
        if r.TTL < 0 {
            return Ok(None);
        }
        Ok(Some(LeaseInfo { ttl: r.TTL, granted_ttl: r.grantedTTL, keys: r.keys.into_iter().map(|k| k.0).collect() }))
    }
}

struct Shared {
    stop: Mutex<bool>,
    wake: Condvar,
    lost: AtomicBool,
}

/// A lease renewed every third of its TTL by a background thread, for registrations
/// that must disappear when this host does.
///
/// The lease counts as lost when the server says it is gone, or when it could not be
/// renewed for its whole TTL (counted from the last renewal that was sent): then
/// `on_lost` runs once (on the keepalive thread) and [`KeptLease::is_lost`] turns true;
/// the owner should grant a new lease and write its keys again. Dropping a
/// `KeptLease` stops the thread and revokes the lease (best effort), deleting its keys.
pub struct KeptLease {
    etcd: Etcd,
    lease: Lease,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KeptLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptLease").field("lease", &self.lease).field("lost", &self.is_lost()).finish()
    }
}

impl KeptLease {
    /// Grants a lease of `ttl_secs` and keeps it alive.
    pub fn grant(etcd: &Etcd, ttl_secs: i64, on_lost: impl FnOnce() + Send + 'static) -> Result<KeptLease, EtcdError> {
        let lease = etcd.grant_lease(ttl_secs)?;
        KeptLease::keep(etcd, lease, on_lost)
    }

    /// Keeps an already granted lease alive (renewing it once first, so a lease that
    /// is already gone is an error here rather than a call to `on_lost`).
    pub fn keep(etcd: &Etcd, lease: Lease, on_lost: impl FnOnce() + Send + 'static) -> Result<KeptLease, EtcdError> {
        let sent = Instant::now();
        let ttl = etcd.keep_alive_once(lease.id)?;
        let lease = Lease { id: lease.id, ttl };
        let shared = Arc::new(Shared { stop: Mutex::new(false), wake: Condvar::new(), lost: AtomicBool::new(false) });
        let (e, s) = (etcd.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name(format!("etcd-lease-{:x}", lease.id))
            .spawn(move || keep_alive_loop(&e, lease, sent + Duration::from_secs(ttl as u64), &s, on_lost))
            .map_err(|e| EtcdError::Config(format!("spawning the keepalive thread: {e}")))?;
        Ok(KeptLease { etcd: etcd.clone(), lease, shared, thread: Some(thread) })
    }

    /// The lease ID, to attach keys with.
    pub fn id(&self) -> i64 {
        self.lease.id
    }

    /// The lease with its granted TTL.
    pub fn lease(&self) -> Lease {
        self.lease
    }

    /// The lease expired or was revoked: its keys are gone (or about to be).
    pub fn is_lost(&self) -> bool {
        self.shared.lost.load(Ordering::Acquire)
    }

    /// Stops renewing and revokes the lease now, reporting the outcome (dropping does
    /// the same but ignores errors).
    pub fn revoke(mut self) -> Result<(), EtcdError> {
        self.stop_thread();
        let lost = self.is_lost();
        self.shared.lost.store(true, Ordering::Release); // nothing left for drop to do
        match self.etcd.revoke(self.lease.id) {
            Err(EtcdError::LeaseNotFound) if lost => Ok(()),
            r => r,
        }
    }

    fn stop_thread(&mut self) {
        *self.shared.stop.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for KeptLease {
    fn drop(&mut self) {
        self.stop_thread();
        if !self.is_lost() {
            if let Err(e) = self.etcd.revoke(self.lease.id) {
                debug!(lease = self.lease.id, error = %e, "revoking lease on drop");
            }
        }
    }
}

/// Sleeps until `deadline` or until told to stop; true if told to stop.
fn sleep_until(s: &Shared, deadline: Instant) -> bool {
    let mut stop = s.stop.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if *stop {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        stop = s.wake.wait_timeout(stop, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
    }
}

fn keep_alive_loop(etcd: &Etcd, lease: Lease, mut expires: Instant, s: &Shared, on_lost: impl FnOnce()) {
    let period = Duration::from_millis((lease.ttl.max(1) as u64) * 1000 / 3);
    let retry = Duration::from_millis(500).min(period);
    let mut next = Instant::now() + period;
    loop {
        if sleep_until(s, next.min(expires)) {
            return;
        }
        if Instant::now() >= expires {
            warn!(lease = lease.id, "etcd lease could not be renewed in time: lost");
            break;
        }
        let sent = Instant::now();
        match etcd.keep_alive_once(lease.id) {
            Ok(ttl) => {
                expires = sent + Duration::from_secs(ttl as u64);
                next = sent + period;
            }
            Err(EtcdError::LeaseNotFound) => {
                warn!(lease = lease.id, "etcd lease expired or was revoked");
                break;
            }
            Err(e) => {
                debug!(lease = lease.id, error = %e, "etcd lease renewal failed; retrying");
                next = Instant::now() + retry;
            }
        }
    }
    s.lost.store(true, Ordering::Release);
    on_lost();
}
