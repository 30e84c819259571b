//! The client: endpoints, failover, the connection pool, unary calls, and the
//! key/value and transaction API.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::debug;

use super::http::{Conn, Endpoint, HttpError};
use super::wire::{self, prefix_range};
use super::{code, EtcdError, KeyValue};

/// Idle connections kept for reuse, over all endpoints.
const POOL_SIZE: usize = 8;

/// A client for one etcd cluster. Clones share endpoints and the connection pool; every
/// call blocks the calling thread for at most about the timeout per endpoint tried.
#[derive(Clone)]
pub struct Etcd {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) endpoints: Vec<Endpoint>,
    pub(crate) timeout: Duration,
    /// Index of the endpoint tried first (the last one that worked).
    preferred: AtomicUsize,
    pool: Mutex<Vec<(usize, Conn)>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let urls: Vec<&str> = self.inner.endpoints.iter().map(|e| e.url.as_str()).collect();
        f.debug_struct("Etcd").field("endpoints", &urls).field("timeout", &self.inner.timeout).finish()
    }
}

/// What the server said about itself ([`Etcd::status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// etcd version, e.g. "3.4.23".
    pub version: String,
    /// Member ID of the member that answered.
    pub member_id: u64,
    /// Member ID of the current leader (0 if none).
    pub leader: u64,
    /// Current revision of the key space.
    pub revision: i64,
    /// Size of the backend database in bytes.
    pub db_size: i64,
}

/// How a [`Compare`] compares the key's current field with the given one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompareOp {
    /// The key's field equals the given value.
    Equal,
    /// The key's field differs from the given value.
    NotEqual,
    /// The key's field is less than the given value.
    Less,
    /// The key's field is greater than the given value.
    Greater,
}

/// Which field of a key a [`Compare`] looks at, with the value to compare against. For
/// a missing key, version, revisions and lease are 0 and the value compares unequal to
/// everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompareTarget {
    /// Number of modifications since creation (0: the key does not exist).
    Version(i64),
    /// Revision of the key's creation (0: the key does not exist).
    CreateRevision(i64),
    /// Revision of the key's last modification.
    ModRevision(i64),
    /// The value.
    Value(Vec<u8>),
    /// The attached lease ID (0: none).
    Lease(i64),
}

/// One condition of a transaction: `key`'s `target` field `op` the target's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Compare {
    /// The key looked at.
    pub key: Vec<u8>,
    /// The comparison.
    pub op: CompareOp,
    /// The field and the value compared with.
    pub target: CompareTarget,
    /// Non-empty: the condition is on every key in `[key, range_end)` and holds when
    /// each of them satisfies it; over no key at all it is compared with an absent
    /// key's fields (create revision 0), and a `Value` condition fails.
    pub range_end: Vec<u8>,
}

impl Compare {
    /// A condition on `key`.
    pub fn new(key: impl AsRef<[u8]>, target: CompareTarget, op: CompareOp) -> Compare {
        Compare { key: key.as_ref().to_vec(), op, target, range_end: Vec::new() }
    }

    /// No key starts with `prefix` (etcd 3.3 or newer: a range comparison).
    pub fn none_with_prefix(prefix: impl AsRef<[u8]>) -> Compare {
        let (key, range_end) = prefix_range(prefix.as_ref());
        Compare { key, op: CompareOp::Equal, target: CompareTarget::CreateRevision(0), range_end }
    }

    /// `key` does not exist (its create revision is 0).
    pub fn absent(key: impl AsRef<[u8]>) -> Compare {
        Compare::new(key, CompareTarget::CreateRevision(0), CompareOp::Equal)
    }

    /// `key` exists.
    pub fn exists(key: impl AsRef<[u8]>) -> Compare {
        Compare::new(key, CompareTarget::CreateRevision(0), CompareOp::Greater)
    }

    /// `key` has exactly `value`.
    pub fn value_is(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Compare {
        Compare::new(key, CompareTarget::Value(value.as_ref().to_vec()), CompareOp::Equal)
    }

    /// `key` was last modified at `rev` (optimistic concurrency: unchanged since read).
    pub fn mod_revision_is(key: impl AsRef<[u8]>, rev: i64) -> Compare {
        Compare::new(key, CompareTarget::ModRevision(rev), CompareOp::Equal)
    }

    fn to_wire(&self) -> wire::CompareRequest {
        let result = match self.op {
            CompareOp::Equal => "EQUAL",
            CompareOp::NotEqual => "NOT_EQUAL",
            CompareOp::Less => "LESS",
            CompareOp::Greater => "GREATER",
        };
        let mut c =
            wire::CompareRequest { key: self.key.clone(), range_end: self.range_end.clone(), result, ..Default::default() };
        match &self.target {
            CompareTarget::Version(v) => (c.target, c.version) = ("VERSION", Some(*v)),
            CompareTarget::CreateRevision(v) => (c.target, c.create_revision) = ("CREATE", Some(*v)),
            CompareTarget::ModRevision(v) => (c.target, c.mod_revision) = ("MOD", Some(*v)),
            CompareTarget::Value(v) => (c.target, c.value) = ("VALUE", Some(wire::Bytes(v.clone()))),
            CompareTarget::Lease(v) => (c.target, c.lease) = ("LEASE", Some(*v)),
        }
        c
    }
}

/// One operation inside a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Read one key.
    Get(Vec<u8>),
    /// Read every key with this prefix.
    GetPrefix(Vec<u8>),
    /// Write a key, attached to a lease or not.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Lease to attach the key to.
        lease: Option<i64>,
    },
    /// Delete one key.
    Delete(Vec<u8>),
    /// Delete every key with this prefix.
    DeletePrefix(Vec<u8>),
}

impl Op {
    /// [`Op::Put`].
    pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, lease: Option<i64>) -> Op {
        Op::Put { key: key.as_ref().to_vec(), value: value.as_ref().to_vec(), lease }
    }

    /// [`Op::Get`].
    pub fn get(key: impl AsRef<[u8]>) -> Op {
        Op::Get(key.as_ref().to_vec())
    }

    /// [`Op::Delete`].
    pub fn delete(key: impl AsRef<[u8]>) -> Op {
        Op::Delete(key.as_ref().to_vec())
    }

    fn to_wire(&self) -> wire::RequestOp {
        let mut r = wire::RequestOp::default();
        match self {
            Op::Get(k) => r.request_range = Some(wire::RangeRequest { key: k.clone(), ..Default::default() }),
            Op::GetPrefix(p) => {
                let (key, range_end) = prefix_range(p);
                r.request_range = Some(wire::RangeRequest { key, range_end, ..Default::default() });
            }
            Op::Put { key, value, lease } => {
                r.request_put =
                    Some(wire::PutRequest { key: key.clone(), value: value.clone(), lease: lease.unwrap_or(0) })
            }
            Op::Delete(k) => {
                r.request_delete_range = Some(wire::DeleteRangeRequest { key: k.clone(), range_end: vec![] })
            }
            Op::DeletePrefix(p) => {
                let (key, range_end) = prefix_range(p);
                r.request_delete_range = Some(wire::DeleteRangeRequest { key, range_end });
            }
        }
        r
    }
}

/// A transaction: if every comparison holds, the `success` operations run, otherwise
/// the `failure` ones, atomically at one revision.
///
/// ```text
/// let t = Txn::new().when(Compare::absent("/a")).and_then(Op::put("/a", "1", None)).or_else(Op::get("/a"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions, all of which must hold.
    pub compare: Vec<Compare>,
    /// Operations run when they hold.
    pub success: Vec<Op>,
    /// Operations run when one does not.
    pub failure: Vec<Op>,
}

impl Txn {
    /// An empty transaction (which succeeds and does nothing).
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds a condition.
    pub fn when(mut self, c: Compare) -> Txn {
        self.compare.push(c);
        self
    }

    /// Adds an operation run on success.
    pub fn and_then(mut self, op: Op) -> Txn {
        self.success.push(op);
        self
    }

    /// Adds an operation run on failure.
    pub fn or_else(mut self, op: Op) -> Txn {
        self.failure.push(op);
        self
    }
}

/// The result of one [`Op`] of a transaction, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpResponse {
    /// Keys read by [`Op::Get`] or [`Op::GetPrefix`].
    Get(Vec<KeyValue>),
    /// A put was done.
    Put,
    /// Number of keys deleted.
    Delete(u64),
}

/// The result of [`Etcd::txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnResponse {
    /// The comparisons held (the success branch ran).
    pub succeeded: bool,
    /// Revision of the key space after the transaction.
    pub revision: i64,
    /// Results of the operations of the branch that ran.
    pub responses: Vec<OpResponse>,
}

impl TxnResponse {
    /// The keys read by the first get-like operation that ran, or none.
    pub fn first_get(&self) -> &[KeyValue] {
        self.responses
            .iter()
            .find_map(|r| match r {
                OpResponse::Get(kvs) => Some(kvs.as_slice()),
                _ => None,
            })
            .unwrap_or(&[])
    }
}

/// Whether a call may be sent again after the connection broke with it in flight.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotent {
    /// Reads and keepalives: resend to the next endpoint on any connection error.
    Yes,
    /// Writes: resend only if the request certainly did not reach a server.
    No,
}

impl Etcd {
    /// Default timeout for connecting and for each read or write.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A client for the cluster serving `urls` (`http://host:port`), checking that one
    /// of them answers (see [`Etcd::status`]); with [`Etcd::DEFAULT_TIMEOUT`].
    pub fn connect(urls: &[&str]) -> Result<Etcd, EtcdError> {
        Etcd::connect_timeout(urls, Etcd::DEFAULT_TIMEOUT)
    }

    /// [`Etcd::connect`] with another timeout.
    pub fn connect_timeout(urls: &[&str], timeout: Duration) -> Result<Etcd, EtcdError> {
        let etcd = Etcd::new(urls, timeout)?;
        let st = etcd.status()?;
        debug!(version = %st.version, leader = st.leader, "connected to etcd");
        Ok(etcd)
    }

    /// A client for `urls` without contacting them (calls fail with
    /// [`EtcdError::Unavailable`] while none answers).
    pub fn new(urls: &[&str], timeout: Duration) -> Result<Etcd, EtcdError> {
        if urls.is_empty() {
            return Err(EtcdError::Config("no etcd endpoint given".into()));
        }
        let endpoints = urls.iter().map(|u| Endpoint::parse(u)).collect::<Result<Vec<_>, _>>()?;
        let timeout = timeout.max(Duration::from_millis(1));
        Ok(Etcd {
            inner: Arc::new(Inner { endpoints, timeout, preferred: AtomicUsize::new(0), pool: Mutex::new(Vec::new()) }),
        })
    }

    /// The endpoint URLs, as given.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// The timeout for connecting and for each read or write.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// Endpoint indexes in the order to try them: the preferred one first.
    pub(crate) fn endpoint_order(&self) -> impl Iterator<Item = usize> {
        let n = self.inner.endpoints.len();
        let first = self.inner.preferred.load(Ordering::Relaxed) % n;
        (0..n).map(move |i| (first + i) % n)
    }

    /// Makes `ep` the endpoint tried first.
    pub(crate) fn prefer(&self, ep: usize) {
        self.inner.preferred.store(ep, Ordering::Relaxed);
    }

    /// Moves on from `ep` (it answered "unavailable"): the next call tries the next one.
    pub(crate) fn avoid(&self, ep: usize) {
        let n = self.inner.endpoints.len();
        let _ = self.inner.preferred.compare_exchange(ep, (ep + 1) % n, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn pooled(&self, ep: usize) -> Option<Conn> {
        let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(i) = pool.iter().rposition(|(e, _)| *e == ep) {
            let (_, c) = pool.swap_remove(i);
            if !c.is_stale() {
                return Some(c);
            }
        }
        None
    }

    fn release(&self, ep: usize, c: Conn) {
        let mut pool = self.inner.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() >= POOL_SIZE {
            pool.remove(0);
        }
        pool.push((ep, c));
    }

    /// POSTs `req` to `path` and decodes the answer, failing over between endpoints.
    pub(crate) fn call<Q: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        req: &Q,
        idem: Idempotent,
    ) -> Result<R, EtcdError> {
        let body = serde_json::to_vec(req).map_err(|e| EtcdError::Protocol(format!("encoding {path}: {e}")))?;
        let mut errors = Vec::new();
        for ep in self.endpoint_order() {
            let url = &self.inner.endpoints[ep].url;
            // A pooled connection may have been closed by a server that went away; a
            // request that got no byte back on it is resent once on a new connection
            // (the server that closed it never saw the request).
            let mut conn = self.pooled(ep);
            let reused = conn.is_some();
            for attempt in 0..2 {
                let mut c = match conn.take() {
                    Some(c) => c,
                    None => match Conn::connect(&self.inner.endpoints[ep], self.inner.timeout) {
                        Ok(c) => c,
                        Err(e) => {
                            errors.push(format!("{url}: connect: {e}"));
                            break;
                        }
                    },
                };
                match self.exchange(&mut c, path, &body) {
                    Ok((status, body, reusable)) => {
                        if reusable {
                            self.release(ep, c);
                        }
                        return match decode(path, status, &body) {
                            Err(e @ EtcdError::Server { code: code::UNAVAILABLE, .. }) => {
                                self.avoid(ep);
                                Err(e)
                            }
                            r => {
                                self.prefer(ep);
                                r
                            }
                        };
                    }
                    Err(HttpError::Protocol(m)) => return Err(EtcdError::Protocol(format!("{url}{path}: {m}"))),
                    Err(HttpError::Io(e)) => {
                        let silent = c.received() == 0;
                        debug!(url = %url, path, error = %e, reused, "etcd request failed");
                        if attempt == 0 && reused && silent {
                            continue;
                        }
                        if idem == Idempotent::No {
                            // The request went out: it may have been applied.
                            self.avoid(ep);
                            return Err(EtcdError::Unavailable(format!("{url}{path}: {e} (outcome unknown)")));
                        }
                        errors.push(format!("{url}: {e}"));
                        break;
                    }
                }
            }
        }
        Err(EtcdError::Unavailable(errors.join("; ")))
    }

    /// One request and its whole response on `c`.
    fn exchange(&self, c: &mut Conn, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>, bool), HttpError> {
        c.send(path, body)?;
        let head = c.read_head()?;
        let (body, reusable) = c.read_body(&head)?;
        Ok((head.status, body, reusable))
    }

    /// Member status of the first endpoint that answers.
    pub fn status(&self) -> Result<Status, EtcdError> {
        let r: wire::StatusResponse = self.call("/v3/maintenance/status", &serde_json::json!({}), Idempotent::Yes)?;
        if r.version.is_empty() {
            return Err(EtcdError::Protocol("status without a version: not an etcd v3 server?".into()));
        }
        Ok(Status {
            version: r.version,
            member_id: r.header.member_id,
            leader: r.leader,
            revision: r.header.revision,
            db_size: r.dbSize,
        })
    }

    /// The value of `key`, if it exists.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<KeyValue>, EtcdError> {
        let req = wire::RangeRequest { key: key.as_ref().to_vec(), ..Default::default() };
        let r: wire::RangeResponse = self.call("/v3/kv/range", &req, Idempotent::Yes)?;
        Ok(r.kvs.into_iter().next())
    }

    /// Every key starting with `prefix` (all keys for an empty prefix), sorted by key,
    /// and the revision of the key space they were read at (watch from that + 1 to
    /// follow changes).
    pub fn get_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<(Vec<KeyValue>, i64), EtcdError> {
        let (key, range_end) = prefix_range(prefix.as_ref());
        let req = wire::RangeRequest { key, range_end, ..Default::default() };
        let r: wire::RangeResponse = self.call("/v3/kv/range", &req, Idempotent::Yes)?;
        if r.more || r.count as usize != r.kvs.len() {
            return Err(EtcdError::Protocol(format!("range returned {} of {} keys", r.kvs.len(), r.count)));
        }
        Ok((r.kvs, r.header.revision))
    }

    /// Number of keys starting with `prefix`, and the revision.
    pub fn count_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<(u64, i64), EtcdError> {
        let (key, range_end) = prefix_range(prefix.as_ref());
        let req = wire::RangeRequest { key, range_end, count_only: true, ..Default::default() };
        let r: wire::RangeResponse = self.call("/v3/kv/range", &req, Idempotent::Yes)?;
        Ok((r.count.max(0) as u64, r.header.revision))
    }

    /// Sets `key` to `value`, attached to `lease` if given ([`EtcdError::LeaseNotFound`]
    /// if that lease is gone). Returns the new revision.
    pub fn put(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, lease: Option<i64>) -> Result<i64, EtcdError> {
        let req =
            wire::PutRequest { key: key.as_ref().to_vec(), value: value.as_ref().to_vec(), lease: lease.unwrap_or(0) };
        let r: wire::PutResponse = self.call("/v3/kv/put", &req, Idempotent::No)?;
        Ok(r.header.revision)
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub fn delete(&self, key: impl AsRef<[u8]>) -> Result<u64, EtcdError> {
        let req = wire::DeleteRangeRequest { key: key.as_ref().to_vec(), range_end: vec![] };
        let r: wire::DeleteRangeResponse = self.call("/v3/kv/deleterange", &req, Idempotent::No)?;
        Ok(r.deleted.max(0) as u64)
    }

    /// Deletes every key starting with `prefix` (every key for an empty prefix);
    /// returns how many were deleted.
    pub fn delete_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<u64, EtcdError> {
        let (key, range_end) = prefix_range(prefix.as_ref());
        let req = wire::DeleteRangeRequest { key, range_end };
        let r: wire::DeleteRangeResponse = self.call("/v3/kv/deleterange", &req, Idempotent::No)?;
        Ok(r.deleted.max(0) as u64)
    }

    /// Runs a transaction (see [`Txn`]). A comparison that does not hold is not an
    /// error: `succeeded` is false and the failure branch ran.
    pub fn txn(&self, t: &Txn) -> Result<TxnResponse, EtcdError> {
        let req = wire::TxnRequest {
            compare: t.compare.iter().map(Compare::to_wire).collect(),
            success: t.success.iter().map(Op::to_wire).collect(),
            failure: t.failure.iter().map(Op::to_wire).collect(),
        };
        let r: wire::TxnResponse = self.call("/v3/kv/txn", &req, Idempotent::No)?;
        let ran = if r.succeeded { &t.success } else { &t.failure };
        if r.responses.len() != ran.len() {
            return Err(EtcdError::Protocol(format!(
                "txn: {} responses for {} operations",
                r.responses.len(),
                ran.len()
            )));
        }
        let responses = r
            .responses
            .into_iter()
            .map(|op| match op {
                wire::ResponseOp { response_range: Some(rr), .. } => Ok(OpResponse::Get(rr.kvs)),
                wire::ResponseOp { response_delete_range: Some(d), .. } => {
                    Ok(OpResponse::Delete(d.deleted.max(0) as u64))
                }
                wire::ResponseOp { response_put: Some(_), .. } => Ok(OpResponse::Put),
                _ => Err(EtcdError::Protocol("txn: response of an unknown kind".into())),
            })
            .collect::<Result<_, _>>()?;
        Ok(TxnResponse { succeeded: r.succeeded, revision: r.header.revision, responses })
    }

    /// Creates `key` with `value` only if it does not exist. `Ok(true)` if this call
    /// created it; `Ok(false)` if the key already existed (nothing was written).
    pub fn create(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: Option<i64>,
    ) -> Result<bool, EtcdError> {
        let key = key.as_ref();
        let t = Txn::new().when(Compare::absent(key)).and_then(Op::put(key, value, lease));
        Ok(self.txn(&t)?.succeeded)
    }

    /// Compacts the history up to `revision`: watches and reads at older revisions are
    /// no longer possible. (An administrative call; the cluster may also compact by
    /// itself when started with `--auto-compaction-retention`.)
    pub fn compact(&self, revision: i64) -> Result<(), EtcdError> {
        let req = wire::CompactionRequest { revision, physical: true };
        let _: serde_json::Value = self.call("/v3/kv/compaction", &req, Idempotent::Yes)?;
        Ok(())
    }
}

/// Turns a gateway answer into the response type or an [`EtcdError`].
pub(crate) fn decode<R: DeserializeOwned>(path: &str, status: u16, body: &[u8]) -> Result<R, EtcdError> {
    let snippet = || String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    if status == 200 {
        return serde_json::from_slice(body)
            .map_err(|e| EtcdError::Protocol(format!("{path}: bad response ({e}): {}", snippet())));
    }
    // Streaming calls wrap errors: {"error": {"grpc_code": N, "message": "..."}}.
    if let Ok(wire::StreamMessage::<serde_json::Value> { error: Some(e), .. }) = serde_json::from_slice(body) {
        return Err(server_error(if e.grpc_code != 0 { e.grpc_code } else { e.code }, e.message));
    }
    match serde_json::from_slice::<wire::ErrorBody>(body) {
        Ok(e) if e.code != 0 => Err(server_error(e.code, if e.message.is_empty() { e.error } else { e.message })),
        _ => Err(EtcdError::Protocol(format!("{path}: HTTP {status}: {}", snippet()))),
    }
}

/// An error the server reported, with "lease not found" singled out.
pub(crate) fn server_error(code: i32, message: String) -> EtcdError {
    if code == code::NOT_FOUND && message.contains("lease not found") {
        EtcdError::LeaseNotFound
    } else {
        EtcdError::Server { code, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_errors() {
        let e = decode::<wire::PutResponse>(
            "/v3/kv/put",
            404,
            br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
        );
        assert_eq!(e.unwrap_err(), EtcdError::LeaseNotFound);
        let e = decode::<wire::PutResponse>(
            "/v3/kv/put",
            400,
            br#"{"error":"illegal base64 data at input byte 0","message":"illegal base64 data at input byte 0","code":3}"#,
        )
        .unwrap_err();
        assert_eq!(e, EtcdError::Server { code: 3, message: "illegal base64 data at input byte 0".into() });
        assert!(!e.is_retryable());
        let e = decode::<wire::LeaseResponse>(
            "/v3/lease/keepalive",
            503,
            br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#,
        )
        .unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(matches!(decode::<wire::PutResponse>("/x", 502, b"<html>"), Err(EtcdError::Protocol(_))));
        assert!(matches!(decode::<wire::PutResponse>("/x", 200, b"{\"header\":"), Err(EtcdError::Protocol(_))));
        let ok: wire::PutResponse = decode("/x", 200, br#"{"header":{"revision":"9"}}"#).unwrap();
        assert_eq!(ok.header.revision, 9);
    }

    #[test]
    fn txn_builder_and_wire() {
        let t = Txn::new()
            .when(Compare::absent("k"))
            .when(Compare::new("v", CompareTarget::Version(3), CompareOp::Less))
            .and_then(Op::put("k", "1", Some(5)))
            .or_else(Op::GetPrefix(b"/p/".to_vec()))
            .or_else(Op::DeletePrefix(vec![]));
        let req = wire::TxnRequest {
            compare: t.compare.iter().map(Compare::to_wire).collect(),
            success: t.success.iter().map(Op::to_wire).collect(),
            failure: t.failure.iter().map(Op::to_wire).collect(),
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            concat!(
                r#"{"compare":[{"key":"aw==","target":"CREATE","result":"EQUAL","create_revision":"0"},"#,
                r#"{"key":"dg==","target":"VERSION","result":"LESS","version":"3"}],"#,
                r#""success":[{"request_put":{"key":"aw==","value":"MQ==","lease":"5"}}],"#,
                r#""failure":[{"request_range":{"key":"L3Av","range_end":"L3Aw"}},"#,
                r#"{"request_delete_range":{"key":"AA==","range_end":"AA=="}}]}"#
            )
        );
        let c = Compare::value_is("k", "").to_wire();
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"key":"aw==","target":"VALUE","result":"EQUAL","value":""}"#
        );
    }

    #[test]
    fn config_errors() {
        assert!(matches!(Etcd::new(&[], Duration::from_secs(1)), Err(EtcdError::Config(_))));
        assert!(matches!(Etcd::new(&["https://x:1"], Duration::from_secs(1)), Err(EtcdError::Config(_))));
        let e = Etcd::new(&["http://127.0.0.1:1", "http://127.0.0.1:2"], Duration::from_millis(200)).unwrap();
        assert_eq!(e.endpoints(), vec!["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        match e.get("x") {
            Err(EtcdError::Unavailable(m)) => assert!(m.contains(":1: connect") && m.contains(":2: connect"), "{m}"),
            r => panic!("{r:?}"),
        }
    }
}
