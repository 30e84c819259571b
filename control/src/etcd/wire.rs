//! The JSON shapes of etcd's gateway: base64 for bytes, decimal strings for 64-bit
//! integers (accepted as numbers too), and the request/response messages this client
//! uses. Response fields are all optional: etcd leaves out zero values.

use serde::{Deserialize, Serialize};

use super::KeyValue;

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 (RFC 4648 alphabet, with `=` padding).
pub(crate) fn b64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(B64[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64; padding is optional, but must be right if present.
pub(crate) fn b64_decode(s: &str) -> Result<Vec<u8>, String> {
    fn val(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let data = match bytes.iter().position(|&c| c == b'=') {
        Some(p) => {
            let pad = &bytes[p..];
            if pad.len() > 2 || pad.iter().any(|&c| c != b'=') || bytes.len() & 3 != 0 {
                return Err(format!("bad base64 padding in {s:?}"));
            }
            &bytes[..p]
        }
        None => bytes,
    };
    if data.len() & 3 == 1 {
        return Err(format!("bad base64 length {}", bytes.len()));
    }
    let mut out = Vec::with_capacity(data.len() * 3 / 4);
    for chunk in data.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = val(c).ok_or_else(|| format!("bad base64 character {:?}", c as char))?;
            n |= v << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
        // Bits below the last whole byte must be zero (canonical encoding).
        let used = 6 * chunk.len() as u32;
        let spare = used % 8;
        if spare != 0 && chunk.len() < 4 && (n >> (24 - used)) & ((1 << spare) - 1) != 0 {
            return Err(format!("non-canonical base64 {s:?}"));
        }
    }
    Ok(out)
}

/// The `range_end` that makes a range over `key` cover every key starting with
/// `prefix`: the prefix with its last byte below 0xff incremented and what follows cut
/// off. For a prefix of only 0xff bytes (or an empty one) this is `[0]`, which etcd reads
/// as "to the end of the keyspace".
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `(key, range_end)` of a range covering every key starting with `prefix`. An empty
/// prefix means every key: etcd refuses an empty key, so that is `("\0", "\0")`.
pub(crate) fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        (vec![0], vec![0])
    } else {
        (prefix.to_vec(), prefix_range_end(prefix))
    }
}

/// `#[serde(with)]` for bytes as base64 strings.
pub(crate) mod b64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::b64_encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = Option::<String>::deserialize(d)?.unwrap_or_default();
        super::b64_decode(&s).map_err(serde::de::Error::custom)
    }
}

/// Bytes that (de)serialize as a base64 string, for use inside containers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Bytes(#[serde(with = "b64")] pub Vec<u8>);

/// `#[serde(with)]` for integers as decimal strings (etcd's int64/uint64); numbers are
/// accepted too.
pub(crate) mod int {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        Num(serde_json::Number),
        Str(String),
    }

    pub(crate) fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(crate) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr + Default,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let text = match Option::<NumOrStr>::deserialize(d)? {
            None => return Ok(T::default()),
            Some(NumOrStr::Num(n)) => n.to_string(),
            Some(NumOrStr::Str(s)) => s,
        };
        text.parse().map_err(|e| serde::de::Error::custom(format!("integer {text:?}: {e}")))
    }
}

/// `#[serde(with)]` for optional integers as decimal strings (serialize only; used
/// with `skip_serializing_if = "Option::is_none"`).
pub(crate) mod opt_int {
    use std::fmt::Display;

    use serde::Serializer;

    pub(crate) fn serialize<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

// ---- requests ----

/// `RangeRequest`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct RangeRequest {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub range_end: Vec<u8>,
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    pub limit: i64,
    #[serde(skip_serializing_if = "is_false")]
    pub count_only: bool,
}

/// `PutRequest`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct PutRequest {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(with = "b64")]
    pub value: Vec<u8>,
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    pub lease: i64,
}

/// `DeleteRangeRequest`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct DeleteRangeRequest {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub range_end: Vec<u8>,
}

/// `Compare`: exactly one of the target fields is set, matching `target`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct CompareRequest {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub range_end: Vec<u8>,
    /// "VERSION", "CREATE", "MOD", "VALUE" or "LEASE".
    pub target: &'static str,
    /// "EQUAL", "NOT_EQUAL", "LESS" or "GREATER".
    pub result: &'static str,
    #[serde(serialize_with = "opt_int::serialize", skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(serialize_with = "opt_int::serialize", skip_serializing_if = "Option::is_none")]
    pub create_revision: Option<i64>,
    #[serde(serialize_with = "opt_int::serialize", skip_serializing_if = "Option::is_none")]
    pub mod_revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<Bytes>,
    #[serde(serialize_with = "opt_int::serialize", skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
}

/// `RequestOp`: one of the three set.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct RequestOp {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_range: Option<RangeRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_put: Option<PutRequest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_delete_range: Option<DeleteRangeRequest>,
}

/// `TxnRequest`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct TxnRequest {
    pub compare: Vec<CompareRequest>,
    pub success: Vec<RequestOp>,
    pub failure: Vec<RequestOp>,
}

/// `LeaseGrantRequest`, `LeaseRevokeRequest`, `LeaseKeepAliveRequest` and
/// `LeaseTimeToLiveRequest` (the fields each one does not have are left out).
#[derive(Clone, Debug, Default, Serialize)]
#[allow(non_snake_case)]
pub(crate) struct LeaseRequest {
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    pub ID: i64,
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    pub TTL: i64,
    #[serde(skip_serializing_if = "is_false")]
    pub keys: bool,
}

/// `CompactionRequest`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct CompactionRequest {
    #[serde(with = "int")]
    pub revision: i64,
    #[serde(skip_serializing_if = "is_false")]
    pub physical: bool,
}

/// `WatchRequest` with a `create_request`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct WatchRequest {
    pub create_request: WatchCreateRequest,
}

/// `WatchCreateRequest`.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct WatchCreateRequest {
    #[serde(with = "b64")]
    pub key: Vec<u8>,
    #[serde(with = "b64", skip_serializing_if = "Vec::is_empty")]
    pub range_end: Vec<u8>,
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    pub start_revision: i64,
}

// ---- responses ----

/// `ResponseHeader` (only the revision is used).
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, with = "int")]
    pub revision: i64,
    #[serde(default, with = "int")]
    pub member_id: u64,
}

/// `RangeResponse`.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
    #[serde(default, with = "int")]
    pub count: i64,
    #[serde(default)]
    pub more: bool,
}

/// `PutResponse`.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct PutResponse {
    #[serde(default)]
    pub header: Header,
}

/// `DeleteRangeResponse`.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct DeleteRangeResponse {
    #[serde(default, with = "int")]
    pub deleted: i64,
}

/// `ResponseOp`: one of the three set.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct ResponseOp {
    #[serde(default)]
    pub response_range: Option<RangeResponse>,
    #[serde(default)]
    pub response_put: Option<PutResponse>,
    #[serde(default)]
    pub response_delete_range: Option<DeleteRangeResponse>,
}

/// `TxnResponse`.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

/// `LeaseGrantResponse`, `LeaseKeepAliveResponse`, `LeaseTimeToLiveResponse` and
/// `LeaseRevokeResponse` (missing fields are zero).
#[derive(Clone, Debug, Default, Deserialize)]
#[allow(non_snake_case)]
pub(crate) struct LeaseResponse {
    #[serde(default, with = "int")]
    pub ID: i64,
    #[serde(default, with = "int")]
    pub TTL: i64,
    #[serde(default, with = "int")]
    pub grantedTTL: i64,
    #[serde(default)]
    pub keys: Vec<Bytes>,
    #[serde(default)]
    pub error: String,
}

/// `StatusResponse`.
#[derive(Clone, Debug, Default, Deserialize)]
#[allow(non_snake_case)]
pub(crate) struct StatusResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub version: String,
    #[serde(default, with = "int")]
    pub leader: u64,
    #[serde(default, with = "int")]
    pub dbSize: i64,
}

/// `mvccpb.Event`.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct Event {
    /// "PUT" (left out, the zero value) or "DELETE".
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub kv: KeyValue,
}

/// `WatchResponse`.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct WatchResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default, with = "int")]
    pub compact_revision: i64,
    #[serde(default)]
    pub cancel_reason: String,
    #[serde(default)]
    pub events: Vec<Event>,
}

/// The error body of a failed unary call: `{"error": "...", "message": "...", "code": N}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub code: i32,
}

/// The error object inside a stream message.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct StreamError {
    #[serde(default)]
    pub grpc_code: i32,
    #[serde(default)]
    pub code: i32,
    #[serde(default)]
    pub message: String,
}

/// One message of a streaming call (watch, lease keepalive): `{"result": {...}}` or
/// `{"error": {...}}`.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct StreamMessage<T> {
    #[serde(default = "Option::default")]
    pub result: Option<T>,
    #[serde(default)]
    pub error: Option<StreamError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_known_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64_encode(plain.as_bytes()), enc);
            assert_eq!(b64_decode(enc).unwrap(), plain.as_bytes());
        }
        assert_eq!(b64_encode(&[0xfb, 0xff, 0xbf]), "+/+/");
        assert_eq!(b64_decode("Zm8").unwrap(), b"fo", "padding is optional");
        assert_eq!(b64_decode("Zg").unwrap(), b"f");
    }

    #[test]
    fn base64_round_trips_every_length_and_byte() {
        let data: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        for len in 0..data.len() {
            let e = b64_encode(&data[..len]);
            assert_eq!(e.len() % 4, 0);
            assert_eq!(b64_decode(&e).unwrap(), &data[..len], "length {len}");
        }
    }

    #[test]
    fn base64_rejects_garbage() {
        for bad in ["Z", "Zm9v!", "Zg=", "Zg===", "Z===", "Zm=v", "Zh==", "Zm9=", "Zm 9v", "Zm9v-_"] {
            assert!(b64_decode(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_range_end(b"abc"), b"abd");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b"\xff\xff"), b"\0");
        assert_eq!(prefix_range_end(b""), b"\0");
        assert_eq!(prefix_range(b""), (vec![0], vec![0]));
        assert_eq!(prefix_range(b"/n/"), (b"/n/".to_vec(), b"/n0".to_vec()));
    }

    #[test]
    fn request_shapes() {
        let put = PutRequest { key: b"foo".to_vec(), value: b"bar".to_vec(), lease: 0 };
        assert_eq!(serde_json::to_string(&put).unwrap(), r#"{"key":"Zm9v","value":"YmFy"}"#);
        let put = PutRequest { key: b"foo".to_vec(), value: vec![], lease: 7_587_869_380_467_611_915 };
        assert_eq!(serde_json::to_string(&put).unwrap(), r#"{"key":"Zm9v","value":"","lease":"7587869380467611915"}"#);
        let r = RangeRequest { key: b"a".to_vec(), range_end: b"b".to_vec(), ..Default::default() };
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"{"key":"YQ==","range_end":"Yg=="}"#);
        let c = CompareRequest {
            key: b"k".to_vec(),
            target: "CREATE",
            result: "EQUAL",
            create_revision: Some(0),
            ..Default::default()
        };
        let t = TxnRequest {
            compare: vec![c],
            success: vec![RequestOp { request_put: Some(put.clone()), ..Default::default() }],
            failure: vec![RequestOp { request_range: Some(r), ..Default::default() }],
        };
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"compare":[{"key":"aw==","target":"CREATE","result":"EQUAL","create_revision":"0"}],"success":[{"request_put":{"key":"Zm9v","value":"","lease":"7587869380467611915"}}],"failure":[{"request_range":{"key":"YQ==","range_end":"Yg=="}}]}"#
        );
        let l = LeaseRequest { TTL: 5, ..Default::default() };
        assert_eq!(serde_json::to_string(&l).unwrap(), r#"{"TTL":"5"}"#);
        let w = WatchRequest {
            create_request: WatchCreateRequest { key: b"a".to_vec(), range_end: b"b".to_vec(), start_revision: 12 },
        };
        assert_eq!(
            serde_json::to_string(&w).unwrap(),
            r#"{"create_request":{"key":"YQ==","range_end":"Yg==","start_revision":"12"}}"#
        );
    }

    #[test]
    fn response_shapes_as_etcd_3_4_sends_them() {
        // Captured from etcd 3.4.23: zero values (empty value, count, deleted,
        // succeeded, the PUT event type, a gone lease's TTL) are left out.
        let r: RangeResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"5","raft_term":"2"},"kvs":[{"key":"ZQ==","create_revision":"5","mod_revision":"5","version":"1"}],"count":"1"}"#,
        )
        .unwrap();
        assert_eq!(r.header.revision, 5);
        assert_eq!(r.header.member_id, 3_319_814_642_761_637_952);
        assert_eq!(r.count, 1);
        assert_eq!(
            r.kvs,
            vec![KeyValue {
                key: b"e".to_vec(),
                create_revision: 5,
                mod_revision: 5,
                version: 1,
                ..Default::default()
            }]
        );
        let r: RangeResponse = serde_json::from_str(r#"{"header":{"revision":"1"}}"#).unwrap();
        assert!(r.kvs.is_empty());
        let d: DeleteRangeResponse = serde_json::from_str(r#"{"header":{"revision":"4"}}"#).unwrap();
        assert_eq!(d.deleted, 0);
        let t: TxnResponse = serde_json::from_str(
            r#"{"header":{"revision":"6"},"responses":[{"response_range":{"header":{"revision":"6"},"kvs":[{"key":"Zm9v","create_revision":"6","mod_revision":"6","version":"1","value":"MQ=="}],"count":"1"}}]}"#,
        )
        .unwrap();
        assert!(!t.succeeded);
        assert_eq!(t.responses[0].response_range.as_ref().unwrap().kvs[0].value, b"1");
        let k: StreamMessage<LeaseResponse> =
            serde_json::from_str(r#"{"result":{"header":{"revision":"5"},"ID":"2324035566009850636"}}"#).unwrap();
        let k = k.result.unwrap();
        assert_eq!((k.ID, k.TTL), (2_324_035_566_009_850_636, 0));
        let w: StreamMessage<WatchResponse> = serde_json::from_str(
            r#"{"result":{"header":{"revision":"7"},"events":[{"kv":{"key":"Zm9v","create_revision":"2","mod_revision":"3","version":"2","value":"YmFy"}},{"type":"DELETE","kv":{"key":"Zm9v","mod_revision":"4"}}]}}"#,
        )
        .unwrap();
        let w = w.result.unwrap();
        assert_eq!(w.events.len(), 2);
        assert_eq!((w.events[0].kind.as_str(), w.events[0].kv.mod_revision), ("", 3));
        assert_eq!((w.events[1].kind.as_str(), w.events[1].kv.mod_revision), ("DELETE", 4));
        let w: StreamMessage<WatchResponse> = serde_json::from_str(
            r#"{"result":{"header":{"cluster_id":"1","raft_term":"2"},"canceled":true,"compact_revision":"8"}}"#,
        )
        .unwrap();
        let w = w.result.unwrap();
        assert!(w.canceled && w.compact_revision == 8);
        let e: StreamMessage<WatchResponse> = serde_json::from_str(
            r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#,
        )
        .unwrap();
        assert!(e.result.is_none());
        assert_eq!(e.error.unwrap().grpc_code, 14);
        let e: ErrorBody = serde_json::from_str(
            r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
        )
        .unwrap();
        assert_eq!(e.code, 5);
        // Numbers are accepted where strings are expected.
        let h: Header = serde_json::from_str(r#"{"revision":42}"#).unwrap();
        assert_eq!(h.revision, 42);
        assert!(serde_json::from_str::<Header>(r#"{"revision":"x"}"#).is_err());
        assert!(serde_json::from_str::<KeyValue>(r#"{"key":"!!"}"#).is_err());
    }
}
