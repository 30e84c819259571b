//! The JSON API over the daemon's Unix socket: one request per line, one response
//! per line. Shared by the daemon (server side) and `vswitchctl` (client side).
//!
//! ```text
//! → {"cmd":"network_create","name":"web","subnet":"10.10.0.0/24"}
//! ← {"ok":true,"result":{...}}
//! ← {"ok":false,"error":"network create: subnet \"10.10.0.0/33\": prefix length 33 is more than 32"}
//! ```

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub const DEFAULT_SOCKET: &str = "/run/vswitchd/vswitchd.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vswitchd";

/// Parameters of `network create`. Strings are validated by the daemon, which names
/// the field in its error.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NetworkCreate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<String>,
    /// The IPv6 sub-range endpoints get their IPv6 addresses from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_table_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac_aging: Option<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    /// Inter-container communication (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icc: Option<bool>,
    /// Dual stack: needs `subnet6`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ipv6: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
    /// bridge (default) or overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// vxlan (default), gre, udp or mesh (`--encrypted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encap: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
}

/// Parameters of `connect`.
/// `port add`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortAdd {
    pub network: String,
    pub ifname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Serve the machine behind the port by DHCP from the gateway.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dhcp: bool,
    /// With `dhcp`: the address handed out (else the next free one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// With `dhcp`: DNS servers handed out (else the host's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Connect {
    pub network: String,
    pub sandbox: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `-p` specs, Docker syntax.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<String>,
}

/// Parameters of `sandbox create`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SandboxCreate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_option: Vec<String>,
}

/// Every request the daemon understands.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Ping,
    NetworkCreate(NetworkCreate),
    NetworkLs,
    NetworkInspect { name: String },
    NetworkRm {
        name: String,
        /// Cluster overlay networks: also drop the addresses still held by endpoints of
        /// hosts that are down.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
    },
    NetworkPrune,
    SandboxCreate(SandboxCreate),
    SandboxRm { name: String },
    SandboxLs,
    Connect(Connect),
    Disconnect { network: String, sandbox: String },
    PortAdd(PortAdd),
    PortRm { network: String, ifname: String },
    PortLs,
    FdbShow { network: String },
    /// Published ports of a sandbox (`docker port`).
    PortMappings { sandbox: String },
    ConntrackLs,
    ConntrackFlush,
    Stats { #[serde(default, skip_serializing_if = "Option::is_none")] port: Option<String> },
    /// This host's mesh public key.
    MeshId,
    /// The mesh peers and their sessions.
    MeshPeers,
    /// Join the mesh member at `addr` (IP[:PORT]).
    MeshConnect { addr: String },
    /// Stop asking the member at `addr` (IP[:PORT]) that has not answered yet.
    MeshForget { addr: String },
}

/// A response line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    pub fn ok(v: Value) -> Response {
        Response { ok: true, result: Some(v), error: None }
    }
    pub fn err(e: impl Into<String>) -> Response {
        Response { ok: false, result: None, error: Some(e.into()) }
    }
}

/// Why a call failed, from the client's side.
#[derive(Debug)]
pub enum ClientError {
    /// No daemon answers on the socket.
    NotRunning(String),
    /// Transport trouble after connecting.
    Io(io::Error),
    /// The daemon refused the request; the message is for the user.
    Refused(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::NotRunning(m) => f.write_str(m),
            ClientError::Io(e) => write!(f, "talking to vswitchd: {e}"),
            ClientError::Refused(m) => f.write_str(m),
        }
    }
}

/// Sends one request and returns the daemon's result.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Value, ClientError> {
    let mut s = UnixStream::connect(socket).map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => "is vswitchd running?".to_string(),
            io::ErrorKind::PermissionDenied => "permission denied (run as root?)".to_string(),
            _ => e.to_string(),
        };
        ClientError::NotRunning(format!("cannot connect to vswitchd at {}: {why}", socket.display()))
    })?;
    s.set_read_timeout(Some(timeout)).map_err(ClientError::Io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::Io(io::Error::other(e)))?;
    line.push(b'\n');
    // A daemon that refuses the connection (too many clients) answers and closes before
    // reading: the write then fails, but its answer is there to read.
    let wrote = s.write_all(&line);
    let mut r = BufReader::new(s);
    let mut resp = String::new();
    let read = r.read_line(&mut resp);
    if let (Err(e), Err(_) | Ok(0)) = (wrote, &read) {
        return Err(ClientError::Io(e));
    }
    read.map_err(|e| match e.kind() {
        // The read timed out: the daemon took the request but does not answer (busy
        // or hung), which is "not running" for the caller (exit 3), said plainly.
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::NotRunning(format!(
            "vswitchd at {} did not answer within {} s (--timeout); it may be hung or busy",
            socket.display(),
            timeout.as_secs()
        )),
        _ => ClientError::Io(e),
    })?;
    if resp.is_empty() {
        return Err(ClientError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "vswitchd closed the connection")));
    }
    let resp: Response = serde_json::from_str(&resp).map_err(|e| ClientError::Io(io::Error::other(e)))?;
    if resp.ok {
        Ok(resp.result.unwrap_or(Value::Null))
    } else {
        Err(ClientError::Refused(resp.error.unwrap_or_else(|| "request failed".into())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let r = Request::NetworkCreate(NetworkCreate { name: "web".into(), subnet: Some("10.10.0.0/24".into()), ..Default::default() });
        let j = serde_json::to_string(&r).unwrap();
        assert_eq!(j, r#"{"cmd":"network_create","name":"web","subnet":"10.10.0.0/24"}"#);
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
        let d: Request = serde_json::from_str(r#"{"cmd":"disconnect","network":"a","sandbox":"b"}"#).unwrap();
        assert_eq!(d, Request::Disconnect { network: "a".into(), sandbox: "b".into() });
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"nope"}"#).is_err());
    }
}
