//! A small synchronous etcd v3 client for the control plane, speaking etcd's JSON
//! gateway (`/v3/...`, the gRPC-gateway that etcd 3.4 serves on its client URLs) over
//! plain HTTP/1.1 on `std::net::TcpStream`. No async runtime and no gRPC stubs: the
//! daemon's control plane is thread based, and each call here blocks its thread.
//!
//! - [`Etcd`] is the client: a list of endpoints (fails over to the next one on
//!   connection errors), a timeout, and a small pool of kept-alive connections. It is
//!   cheap to clone and can be shared between threads.
//! - Key/value calls: [`Etcd::get`], [`Etcd::get_prefix`], [`Etcd::put`],
//!   [`Etcd::delete`], [`Etcd::delete_prefix`], compare-and-set transactions with
//!   [`Etcd::txn`] ([`Txn`], [`Compare`], [`Op`]) and [`Etcd::create`].
//! - Leases: [`Etcd::grant_lease`], [`Etcd::keep_alive_once`], [`Etcd::revoke`],
//!   [`Etcd::lease_ttl`], and [`KeptLease`], a lease renewed by a background thread.
//! - Watches: [`Etcd::watch_prefix`] streams [`WatchEvent`]s, reconnecting and resuming
//!   by itself; after a compaction it hands the caller a fresh snapshot
//!   ([`WatchEvent::Resync`]).
//!
//! On the wire, keys and values are base64 strings and 64-bit integers are decimal
//! strings; fields equal to their zero value are left out of responses (a missing
//! `value` is an empty value, a missing `succeeded` is `false`, a keepalive answer
//! without `TTL` means the lease is gone). Every request carries the
//! `Grpc-Metadata-Hasleader: true` header (gRPC metadata `hasleader`), so a member cut
//! off from its cluster's leader answers "no leader" (retryable) instead of serving
//! stale reads or leaving a watch silent.

mod client;
mod http;
mod lease;
mod watch;
mod wire;

#[cfg(test)]
pub(crate) mod tests;

use std::fmt;

pub use client::{Compare, CompareOp, CompareTarget, Etcd, Op, OpResponse, Status, Txn, TxnResponse};
pub use lease::{KeptLease, Lease, LeaseInfo};
pub use watch::WatchEvent;
pub use wire::prefix_range_end;

/// One key with its value and metadata, as stored in etcd.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(default, with = "wire::b64")]
    pub key: Vec<u8>,
    /// The value (empty when etcd omits it).
    #[serde(default, with = "wire::b64")]
    pub value: Vec<u8>,
    /// Revision of the last creation of this key (0 for a key that does not exist).
    #[serde(default, with = "wire::int")]
    pub create_revision: i64,
    /// Revision of the last modification of this key.
    #[serde(default, with = "wire::int")]
    pub mod_revision: i64,
    /// Number of modifications since the key was created (1 after creation).
    #[serde(default, with = "wire::int")]
    pub version: i64,
    /// The lease attached to the key, 0 if none.
    #[serde(default, with = "wire::int")]
    pub lease: i64,
}

/// gRPC status codes etcd puts in the `code` field of its errors, for matching on
/// [`EtcdError::Server`].
pub mod code {
    /// The operation was canceled.
    pub const CANCELLED: i32 = 1;
    /// Bad request: empty key, too large a request, etc.
    pub const INVALID_ARGUMENT: i32 = 3;
    /// The server did not finish in time (e.g. "request timed out"); may or may not
    /// have been applied.
    pub const DEADLINE_EXCEEDED: i32 = 4;
    /// Not found (e.g. "requested lease not found").
    pub const NOT_FOUND: i32 = 5;
    /// Authentication: permission denied.
    pub const PERMISSION_DENIED: i32 = 7;
    /// Rate limited ("too many requests").
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    /// Precondition failed (e.g. "lease already exists").
    pub const FAILED_PRECONDITION: i32 = 9;
    /// Aborted.
    pub const ABORTED: i32 = 10;
    /// Out of range (e.g. "required revision has been compacted").
    pub const OUT_OF_RANGE: i32 = 11;
    /// Unavailable: "no leader", "leader changed", "too many requests", stopping.
    pub const UNAVAILABLE: i32 = 14;
}

/// Why an etcd call failed. [`EtcdError::is_retryable`] tells whether trying again
/// later may succeed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EtcdError {
    /// No endpoint could be reached, or a connection failed or timed out. Retrying may
    /// help. For a write (put, delete, txn, lease grant/revoke) that failed after the
    /// request was sent, the write may or may not have been applied.
    Unavailable(String),
    /// The server answered with an error (gRPC `code`, see [`code`], and its message).
    /// Retrying helps for `UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED` and
    /// `ABORTED` only.
    Server {
        /// gRPC status code.
        code: i32,
        /// The server's message, e.g. "etcdserver: no leader".
        message: String,
    },
    /// The lease named in the request does not exist (it expired or was revoked).
    /// Retrying does not help: grant a new lease.
    LeaseNotFound,
    /// The server canceled a watch for a reason other than compaction (which is
    /// handled by the watch itself). Retrying is unlikely to help.
    WatchCanceled(String),
    /// The answer was not what the etcd v3 JSON API sends (not HTTP, bad JSON, wrong
    /// shape), or the server is not etcd 3.x. Retrying does not help.
    Protocol(String),
    /// Bad arguments from the caller (e.g. an endpoint URL that cannot be parsed, an
    /// `https://` URL). Retrying does not help.
    Config(String),
}

impl EtcdError {
    /// Whether retrying the same call later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            EtcdError::Unavailable(_) => true,
            EtcdError::Server { code: c, .. } => {
                matches!(*c, code::UNAVAILABLE | code::DEADLINE_EXCEEDED | code::RESOURCE_EXHAUSTED | code::ABORTED)
            }
            EtcdError::LeaseNotFound | EtcdError::WatchCanceled(_) | EtcdError::Protocol(_) | EtcdError::Config(_) => {
                false
            }
        }
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EtcdError::Unavailable(m) => write!(f, "etcd unavailable: {m}"),
            EtcdError::Server { code, message } => write!(f, "etcd error (code {code}): {message}"),
            EtcdError::LeaseNotFound => write!(f, "etcd lease not found (expired or revoked)"),
            EtcdError::WatchCanceled(m) => write!(f, "etcd watch canceled: {m}"),
            EtcdError::Protocol(m) => write!(f, "etcd protocol error: {m}"),
            EtcdError::Config(m) => write!(f, "etcd client configuration: {m}"),
        }
    }
}

impl std::error::Error for EtcdError {}
