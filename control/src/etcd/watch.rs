//! Watching a key prefix over the gateway's streaming `/v3/watch`, with transparent
//! reconnection and resynchronisation after compaction.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::client::{server_error, Etcd};
use super::http::{Conn, HttpError, JsonSplitter};
use super::wire::{self, prefix_range};
use super::{EtcdError, KeyValue};

/// How often a quiet watch looks at its stop flag.
const POLL: Duration = Duration::from_millis(200);
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// One change seen by [`Etcd::watch_prefix`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or modified (`kv.create_revision == kv.mod_revision` for a
    /// creation).
    Put(KeyValue),
    /// A key was deleted (or its lease expired) at `mod_revision`.
    Delete {
        /// The deleted key.
        key: Vec<u8>,
        /// Revision of the deletion.
        mod_revision: i64,
    },
    /// Events were lost: the history the watch needed was compacted away. This is the
    /// complete current content of the prefix at `revision`; the caller replaces what
    /// it knew with it. Later events follow from `revision + 1`.
    Resync {
        /// Every key under the prefix.
        kvs: Vec<KeyValue>,
        /// The revision they were read at.
        revision: i64,
    },
}

/// How one watch stream ended.
enum StreamEnd {
    /// The caller's callback returned false, or the stop flag was set.
    Stopped,
    /// The history from `next` on is compacted.
    Compacted(i64),
    /// The store is at a revision below what was already delivered: it lost its data
    /// (a member started on an empty or older data directory). Its history says
    /// nothing about what the caller knew: read everything afresh.
    Reset(i64),
    /// The connection broke or timed out, or the server sent a retryable error: try
    /// again (`progress` if the stream had been established).
    Lost { why: String, progress: bool },
}

impl Etcd {
    /// Watches every key starting with `prefix`, from `start_revision` on (0: from
    /// now), calling `f` for each event in revision order, until `f` returns false or
    /// `stop` is set (looked at every 200 ms or so); then returns `Ok(())`.
    ///
    /// Connection losses and "no leader" answers are handled inside: the watch
    /// reconnects (to the next endpoint if need be, with back-off up to 2 s) and
    /// resumes after the last revision it delivered, so no event is missed or
    /// repeated. If that history has been compacted away, it reads the prefix afresh
    /// and delivers it as [`WatchEvent::Resync`]; likewise when the store turns out to
    /// be behind the revisions already delivered (it lost its data: a member restarted
    /// on an empty data directory). Only errors retrying cannot fix come
    /// back as `Err` (a malformed answer, the server canceling the watch for another
    /// reason than compaction, a non-retryable server error).
    ///
    /// Usual pattern: `let (kvs, rev) = etcd.get_prefix(p)?;` then
    /// `etcd.watch_prefix(p, rev + 1, &stop, |ev| ...)`, on a thread of its own.
    pub fn watch_prefix(
        &self,
        prefix: impl AsRef<[u8]>,
        start_revision: i64,
        stop: &AtomicBool,
        mut f: impl FnMut(WatchEvent) -> bool,
    ) -> Result<(), EtcdError> {
        let prefix = prefix.as_ref();
        let mut next = start_revision.max(0);
        let mut backoff = Duration::from_millis(100);
        let mut failing_since: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            match self.watch_stream(prefix, &mut next, stop, &mut f)? {
                StreamEnd::Stopped => return Ok(()),
                end @ (StreamEnd::Compacted(_) | StreamEnd::Reset(_)) => {
                    match end {
                        StreamEnd::Compacted(compact) => info!(next, compact, "etcd watch fell behind a compaction: resynchronising"),
                        StreamEnd::Reset(now) => warn!(next, store_revision = now, "etcd is behind revisions this watch already saw (its data was lost or replaced): resynchronising"),
                        _ => {}
                    }
                    let Some((kvs, revision)) = self.resync_read(prefix, stop)? else { return Ok(()) };
                    next = revision + 1;
                    if !f(WatchEvent::Resync { kvs, revision }) {
                        return Ok(());
                    }
                    backoff = Duration::from_millis(100);
                }
                StreamEnd::Lost { why, progress } => {
                    if progress {
                        backoff = Duration::from_millis(100);
                        failing_since = None;
                    }
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(10) {
                        warn!(error = %why, next, "etcd watch still reconnecting");
                        failing_since = Some(Instant::now());
                    } else {
                        debug!(error = %why, next, "etcd watch stream lost; reconnecting");
                    }
                    if pause(stop, backoff) {
                        return Ok(());
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        Ok(())
    }

    /// Reads the prefix for a resync, retrying while etcd is unavailable; `None` if
    /// stopped meanwhile.
    fn resync_read(&self, prefix: &[u8], stop: &AtomicBool) -> Result<Option<(Vec<KeyValue>, i64)>, EtcdError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.get_prefix(prefix) {
                Ok(r) => return Ok(Some(r)),
                Err(e) if e.is_retryable() => {
                    debug!(error = %e, "etcd watch resync read failed; retrying");
                    if pause(stop, backoff) {
                        return Ok(None);
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Opens a stream to the first endpoint that accepts a connection.
    fn open_watch(&self, body: &[u8]) -> Result<(usize, Conn), String> {
        let mut errors = Vec::new();
        for ep in self.endpoint_order() {
            let url = &self.inner.endpoints[ep].url;
            let mut c = match Conn::connect(&self.inner.endpoints[ep], self.inner.timeout) {
                Ok(c) => c,
                Err(e) => {
                    errors.push(format!("{url}: connect: {e}"));
                    continue;
                }
            };
            if let Err(e) = c.send("/v3/watch", body) {
                errors.push(format!("{url}: {e}"));
                continue;
            }
            return Ok((ep, c));
        }
        Err(errors.join("; "))
    }

    /// One watch stream from `*next` on; advances `*next` past each delivered batch.
    fn watch_stream(
        &self,
        prefix: &[u8],
        next: &mut i64,
        stop: &AtomicBool,
        f: &mut impl FnMut(WatchEvent) -> bool,
    ) -> Result<StreamEnd, EtcdError> {
        let (key, range_end) = prefix_range(prefix);
        let req =
            wire::WatchRequest { create_request: wire::WatchCreateRequest { key, range_end, start_revision: *next } };
        let body = serde_json::to_vec(&req).map_err(|e| EtcdError::Protocol(e.to_string()))?;
        let (ep, mut c) = match self.open_watch(&body) {
            Ok(x) => x,
            Err(why) => return Ok(StreamEnd::Lost { why, progress: false }),
        };
        let url = self.inner.endpoints[ep].url.clone();
        let lost = |e: HttpError, progress: bool| -> Result<StreamEnd, EtcdError> {
            match e {
                HttpError::Io(e) => Ok(StreamEnd::Lost { why: format!("{url}: {e}"), progress }),
                HttpError::Protocol(m) => Err(EtcdError::Protocol(format!("{url}/v3/watch: {m}"))),
            }
        };
        let head = match c.read_head() {
            Ok(h) => h,
            Err(e) => return lost(e, false),
        };
        if head.status != 200 {
            let (data, _) = match c.read_body(&head) {
                Ok(x) => x,
                Err(e) => return lost(e, false),
            };
            return match super::client::decode::<serde_json::Value>("/v3/watch", head.status, &data) {
                Err(e) if e.is_retryable() => {
                    self.avoid(ep);
                    Ok(StreamEnd::Lost { why: format!("{url}: {e}"), progress: false })
                }
                Err(e) => Err(e),
                Ok(_) => Err(EtcdError::Protocol(format!("{url}/v3/watch: HTTP {}", head.status))),
            };
        }
        if let Err(e) = c.set_read_timeout(POLL) {
            return lost(HttpError::Io(e), false);
        }
        let mut reader = c.body_reader(&head);
        let mut split = JsonSplitter::default();
        let mut data = Vec::new();
        let mut created = false;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(StreamEnd::Stopped);
            }
            data.clear();
            match c.read_body_part(&mut reader, &mut data) {
                Ok(more) => {
                    split.push(&data);
                    if !more {
                        // The server ended the stream (e.g. it is shutting down).
                        if let Some(end) = self.drain(&mut split, &url, next, &mut created, f)? {
                            return Ok(end);
                        }
                        return Ok(StreamEnd::Lost { why: format!("{url}: watch stream ended"), progress: created });
                    }
                }
                Err(e) if e.is_timeout() => continue,
                Err(e) => return lost(e, created),
            }
            if let Some(end) = self.drain(&mut split, &url, next, &mut created, f)? {
                if let StreamEnd::Lost { .. } = end {
                    self.avoid(ep);
                }
                return Ok(end);
            }
        }
    }

    /// Handles every complete message received so far.
    fn drain(
        &self,
        split: &mut JsonSplitter,
        url: &str,
        next: &mut i64,
        created: &mut bool,
        f: &mut impl FnMut(WatchEvent) -> bool,
    ) -> Result<Option<StreamEnd>, EtcdError> {
        let bad = |m: String| EtcdError::Protocol(format!("{url}/v3/watch: {m}"));
        while let Some(obj) = split.next_object().map_err(bad)? {
            let msg: wire::StreamMessage<wire::WatchResponse> =
                serde_json::from_slice(&obj).map_err(|e| bad(format!("bad message ({e})")))?;
            let r = match msg {
                wire::StreamMessage { error: Some(e), .. } => {
                    let err = server_error(if e.grpc_code != 0 { e.grpc_code } else { e.code }, e.message);
                    if err.is_retryable() {
                        return Ok(Some(StreamEnd::Lost { why: format!("{url}: {err}"), progress: *created }));
                    }
                    return Err(err);
                }
                wire::StreamMessage { result: Some(r), .. } => r,
                _ => return Err(bad("message without result or error".into())),
            };
            if r.created {
                *created = true;
                if *next == 0 {
                    // Watching "from now": now is the revision the watch was created at.
                    *next = r.header.revision + 1;
                } else if r.header.revision + 1 < *next {
                    // A revision this watch delivered (or was asked to start after) is
                    // beyond the store's: its data is not the one the caller knew.
                    return Ok(Some(StreamEnd::Reset(r.header.revision)));
                }
            }
            if r.canceled {
                if r.compact_revision > 0 {
                    return Ok(Some(StreamEnd::Compacted(r.compact_revision)));
                }
                return Err(EtcdError::WatchCanceled(if r.cancel_reason.is_empty() {
                    "no reason given".into()
                } else {
                    r.cancel_reason
                }));
            }
            let floor = *next;
            for ev in r.events {
                let rev = ev.kv.mod_revision;
                if rev < floor {
                    continue; // already delivered before a reconnection
                }
                let event = match ev.kind.as_str() {
                    "" | "PUT" => WatchEvent::Put(ev.kv),
                    "DELETE" => WatchEvent::Delete { key: ev.kv.key, mod_revision: rev },
                    other => return Err(bad(format!("unknown event type {other:?}"))),
                };
                // Batches end on revision boundaries (a transaction's events all come
                // in one): a new stream resumes after the last revision delivered.
                *next = rev + 1;
                if !f(event) {
                    return Ok(Some(StreamEnd::Stopped));
                }
            }
        }
        Ok(None)
    }
}

/// Sleeps `d` in short steps; true if `stop` was set meanwhile.
fn pause(stop: &AtomicBool, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let now = Instant::now();
        if now >= end {
            return false;
        }
        std::thread::sleep((end - now).min(POLL));
    }
}
