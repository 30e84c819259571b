//! Just enough HTTP/1.1 for etcd's JSON gateway: POST requests with a
//! `Content-Length` body, responses framed by `Content-Length`, chunked transfer
//! encoding (with trailers, which the gateway sends after streams) or the end of the
//! connection, and an incremental reader for streaming responses that are a sequence
//! of JSON objects.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::EtcdError;

/// Longest status line plus headers accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Longest body (or single streamed JSON object) accepted.
pub(crate) const MAX_BODY: usize = 256 * 1024 * 1024;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 8 * 1024;

/// One etcd client URL, `http://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// The URL as given, for messages.
    pub url: String,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// Parses `http://host:port` (also `host:port`, `http://[::1]:2379`, a trailing
    /// `/`; the port defaults to 2379). `https` is refused: there is no TLS here.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, EtcdError> {
        let bad = |why: &str| EtcdError::Config(format!("endpoint {url:?}: {why}"));
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => return Err(bad(&format!("unsupported scheme {scheme:?} (only http)"))),
            None => url,
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(bad("expected http://host:port"));
        }
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            match after {
                "" => (h, None),
                p => (h, Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ']'"))?)),
            }
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        if host.is_empty() || (host.contains(':') && !rest.starts_with('[')) {
            return Err(bad("bad host"));
        }
        let port = match port {
            None => 2379,
            Some(p) => p.parse().ok().filter(|&p| p != 0).ok_or_else(|| bad("bad port"))?,
        };
        Ok(Endpoint { url: url.to_string(), host: host.to_string(), port })
    }

    /// The `Host` header value.
    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Turns on TCP keepalive so that a peer that vanished without closing (host down,
/// partition) breaks an idle watch within about 20 s.
fn set_keepalive(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let fd = s.as_raw_fd();
    for (level, opt, val) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 10),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 3),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 3),
    ] {
        // SAFETY: setsockopt on an open socket with a pointer to a live c_int.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                (&val as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// The status and the framing headers of a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub status: u16,
    pub content_length: Option<usize>,
    pub chunked: bool,
    /// The server will close the connection after this response.
    pub close: bool,
}

/// A connection to one endpoint with its read buffer.
pub(crate) struct Conn {
    stream: TcpStream,
    host: String,
    buf: Vec<u8>,
    /// Bytes received since the last request was sent.
    received: usize,
}

/// How a response body is framed.
enum Framing {
    Length(usize),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// Reads the body of a response piece by piece (streaming calls).
pub(crate) struct BodyReader {
    framing: Framing,
    done: bool,
}

impl Conn {
    /// Connects to `ep` (each of its addresses in turn), with `timeout` for connecting
    /// and as the read and write timeout.
    pub(crate) fn connect(ep: &Endpoint, timeout: Duration) -> io::Result<Conn> {
        let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{}: no address", ep.host));
        for addr in (ep.host.as_str(), ep.port).to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))?;
                    set_keepalive(&stream);
                    return Ok(Conn { stream, host: ep.authority(), buf: Vec::new(), received: 0 });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Changes the read timeout (watch streams poll with a short one).
    pub(crate) fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(t))
    }

    /// Whether this idle connection was closed by the server (or has unexpected data
    /// waiting), so it must not be reused.
    pub(crate) fn is_stale(&self) -> bool {
        if !self.buf.is_empty() || self.stream.set_nonblocking(true).is_err() {
            return true;
        }
        let mut b = [0u8; 1];
        let stale = match self.stream.peek(&mut b) {
            Ok(_) => true, // EOF (0) or unsolicited bytes
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        self.stream.set_nonblocking(false).is_err() || stale
    }

    /// Bytes received since the last request was sent: 0 after an error means the
    /// server sent nothing at all.
    pub(crate) fn received(&self) -> usize {
        self.received
    }

    /// Sends `POST path` with a JSON body.
    pub(crate) fn send(&mut self, path: &str, body: &[u8]) -> io::Result<()> {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: application/json\r\n\
             Grpc-Metadata-Hasleader: true\r\nContent-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.received = 0;
        self.stream.write_all(&req)
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the connection.
    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 16 * 1024];
        let n = loop {
            match self.stream.read(&mut tmp) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.buf.extend_from_slice(&tmp[..n]);
        self.received += n;
        Ok(n)
    }

    /// Reads the status line and headers (skipping `100 Continue`).
    pub(crate) fn read_head(&mut self) -> Result<Head, HttpError> {
        loop {
            let end = loop {
                if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                    break p;
                }
                if self.buf.len() > MAX_HEAD {
                    return Err(HttpError::Protocol("response headers too long".into()));
                }
                if self.fill()? == 0 {
                    return Err(HttpError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed before a response",
                    )));
                }
            };
            let head = parse_head(&self.buf[..end])?;
            self.buf.drain(..end + 4);
            if head.status != 100 {
                return Ok(head);
            }
        }
    }

    /// Starts reading the body of a response with header `head`.
    pub(crate) fn body_reader(&self, head: &Head) -> BodyReader {
        let framing = if head.chunked {
            Framing::Chunked(ChunkedDecoder::default())
        } else if let Some(n) = head.content_length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        let done = matches!(framing, Framing::Length(0));
        BodyReader { framing, done }
    }

    /// Reads the next piece of body into `out` (appending). Returns `Ok(false)` once
    /// the body is complete; a read timeout comes back as an `Io` error of kind
    /// `WouldBlock` or `TimedOut`, after which reading may go on.
    pub(crate) fn read_body_part(&mut self, r: &mut BodyReader, out: &mut Vec<u8>) -> Result<bool, HttpError> {
        loop {
            if r.done {
                return Ok(false);
            }
            if !self.buf.is_empty() {
                let before = out.len();
                match &mut r.framing {
                    Framing::Length(left) => {
                        let n = (*left).min(self.buf.len());
                        out.extend(self.buf.drain(..n));
                        *left -= n;
                        r.done = *left == 0;
                    }
                    Framing::Chunked(dec) => {
                        let used = dec.feed(&self.buf, out).map_err(HttpError::Protocol)?;
                        self.buf.drain(..used);
                        r.done = dec.is_done();
                    }
                    Framing::UntilClose => out.append(&mut self.buf),
                }
                if out.len() > before || r.done {
                    return Ok(!r.done);
                }
            }
            if self.fill()? == 0 {
                return match r.framing {
                    Framing::UntilClose => {
                        r.done = true;
                        Ok(false)
                    }
                    _ => Err(HttpError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-body"))),
                };
            }
        }
    }

    /// Reads a whole body; returns it and whether the connection can be reused.
    pub(crate) fn read_body(&mut self, head: &Head) -> Result<(Vec<u8>, bool), HttpError> {
        let mut r = self.body_reader(head);
        let mut out = Vec::new();
        while self.read_body_part(&mut r, &mut out)? {
            if out.len() > MAX_BODY {
                return Err(HttpError::Protocol("response body too large".into()));
            }
        }
        let reusable = !head.close && !matches!(r.framing, Framing::UntilClose) && self.buf.is_empty();
        Ok((out, reusable))
    }
}

/// An HTTP-level failure: the connection broke (or timed out), or the server did not
/// speak HTTP as expected.
#[derive(Debug)]
pub(crate) enum HttpError {
    Io(io::Error),
    Protocol(String),
}

impl From<io::Error> for HttpError {
    fn from(e: io::Error) -> Self {
        HttpError::Io(e)
    }
}

impl HttpError {
    /// A read timeout (the watch loop polls with these).
    pub(crate) fn is_timeout(&self) -> bool {
        matches!(self, HttpError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a status line and headers (without the final blank line).
pub(crate) fn parse_head(raw: &[u8]) -> Result<Head, HttpError> {
    let text = std::str::from_utf8(raw).map_err(|_| HttpError::Protocol("response head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().and_then(|s| s.parse::<u16>().ok());
    let status = match (version.starts_with("HTTP/1."), status) {
        (true, Some(s)) => s,
        _ => return Err(HttpError::Protocol(format!("not an HTTP/1.x response: {status_line:?}"))),
    };
    let mut head = Head { status, content_length: None, chunked: false, close: version == "HTTP/1.0" };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(HttpError::Protocol(format!("bad header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value.parse().map_err(|_| HttpError::Protocol(format!("bad Content-Length {value:?}")))?;
            head.content_length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.split(',').any(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("connection") {
            head.close = value.split(',').any(|v| v.trim().eq_ignore_ascii_case("close"));
        }
    }
    if let Some(n) = head.content_length {
        if n > MAX_BODY {
            return Err(HttpError::Protocol(format!("response body of {n} bytes is too large")));
        }
    }
    Ok(head)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data,
    DataEnd,
    Trailer,
    Done,
}

/// Incremental decoder of `Transfer-Encoding: chunked`: feed it whatever arrived, in
/// pieces of any size.
#[derive(Debug, Default)]
pub(crate) struct ChunkedDecoder {
    state: ChunkState,
    left: usize,
    line: Vec<u8>,
}

impl ChunkedDecoder {
    /// Decodes as much of `input` as possible, appending data to `out`. Returns how
    /// many bytes were consumed: all of `input` unless the body ended inside it.
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, String> {
        let mut i = 0;
        while i < input.len() && self.state != ChunkState::Done {
            match self.state {
                ChunkState::Size | ChunkState::Trailer | ChunkState::DataEnd => {
                    let Some(nl) = input[i..].iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(&input[i..]);
                        i = input.len();
                        if self.line.len() > MAX_LINE {
                            return Err("chunk header line too long".into());
                        }
                        break;
                    };
                    self.line.extend_from_slice(&input[i..i + nl]);
                    i += nl + 1;
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.line_done(line)?;
                }
                ChunkState::Data => {
                    let n = self.left.min(input.len() - i);
                    out.extend_from_slice(&input[i..i + n]);
                    i += n;
                    self.left -= n;
                    if self.left == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                ChunkState::Done => {}
            }
        }
        Ok(i)
    }

    fn line_done(&mut self, line: &[u8]) -> Result<(), String> {
        match self.state {
            ChunkState::Size => {
                let text = std::str::from_utf8(line).map_err(|_| "chunk size is not text".to_string())?;
                let size = text.split(';').next().unwrap_or_default().trim();
                let n = usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {text:?}"))?;
                if n > MAX_BODY {
                    return Err(format!("chunk of {n} bytes is too large"));
                }
                self.left = n;
                self.state = if n == 0 { ChunkState::Trailer } else { ChunkState::Data };
            }
            ChunkState::DataEnd => {
                if !line.is_empty() {
                    return Err("chunk data not followed by CRLF".into());
                }
                self.state = ChunkState::Size;
            }
            ChunkState::Trailer => {
                if line.is_empty() {
                    self.state = ChunkState::Done;
                }
            }
            ChunkState::Data | ChunkState::Done => {}
        }
        Ok(())
    }

    /// The last chunk and the trailers have been read.
    pub(crate) fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// Splits a stream of concatenated JSON objects (whitespace between them allowed) into
/// the objects, without assuming anything about where the stream was cut.
#[derive(Debug, Default)]
pub(crate) struct JsonSplitter {
    buf: Vec<u8>,
    /// How far `buf` has been scanned, and the scanner's state there.
    pos: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl JsonSplitter {
    /// Appends stream bytes.
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete object, if one has arrived.
    pub(crate) fn next_object(&mut self) -> Result<Option<Vec<u8>>, String> {
        while self.pos < self.buf.len() {
            let c = self.buf[self.pos];
            self.pos += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if c == b'\\' {
                    self.escaped = true;
                } else if c == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match c {
                b' ' | b'\t' | b'\r' | b'\n' if self.depth == 0 => {
                    // Between objects: drop it.
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                }
                _ if self.depth == 0 && c != b'{' => {
                    return Err(format!("stream does not hold JSON objects (byte {:?})", c as char));
                }
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    self.depth -= 1;
                    if self.depth == 0 {
                        let obj: Vec<u8> = self.buf.drain(..self.pos).collect();
                        self.pos = 0;
                        return Ok(Some(obj));
                    }
                }
                b'"' => self.in_string = true,
                _ => {}
            }
        }
        if self.buf.len() > MAX_BODY {
            return Err("streamed JSON object too large".into());
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let ep = Endpoint::parse("http://127.0.0.1:2379").unwrap();
        assert_eq!((ep.host.as_str(), ep.port, ep.authority().as_str()), ("127.0.0.1", 2379, "127.0.0.1:2379"));
        assert_eq!(Endpoint::parse("etcd-1:23790/").unwrap().port, 23790);
        assert_eq!(Endpoint::parse("http://etcd").unwrap().port, 2379);
        let ep = Endpoint::parse("http://[::1]:4001").unwrap();
        assert_eq!((ep.host.as_str(), ep.port, ep.authority().as_str()), ("::1", 4001, "[::1]:4001"));
        for bad in [
            "https://a:1",
            "http://",
            "http://a:b",
            "http://a:0",
            "http://a:1/v3",
            "::1:2379",
            "http://[::1",
            "unix://x",
        ] {
            assert!(matches!(Endpoint::parse(bad), Err(EtcdError::Config(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 216").unwrap();
        assert_eq!(h, Head { status: 200, content_length: Some(216), chunked: false, close: false });
        let h = parse_head(b"HTTP/1.1 404 Not Found\r\nTrailer: Grpc-Trailer-Content-Type\r\ntransfer-encoding: chunked\r\nConnection: close").unwrap();
        assert_eq!(h, Head { status: 404, content_length: None, chunked: true, close: true });
        assert!(parse_head(b"SSH-2.0-OpenSSH").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x").is_err());
        assert!(parse_head(b"HTTP/1.1 200 OK\r\nno colon").is_err());
    }

    /// What etcd's gateway sent for a keepalive on a missing lease (404, chunked,
    /// trailer after the last chunk), with one more response behind it.
    const CHUNKED: &[u8] = b"6c\r\n{\"error\":\"etcdserver: requested lease not found\",\"message\":\"etcdserver: requested lease not found\",\"code\":5}\r\n3;ext=1\r\n\n{}\r\n0\r\nGrpc-Trailer-Content-Type: application/grpc\r\n\r\nHTTP/1.1";

    #[test]
    fn chunked_in_one_piece() {
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let used = d.feed(CHUNKED, &mut out).unwrap();
        assert!(d.is_done());
        assert_eq!(&CHUNKED[used..], b"HTTP/1.1");
        assert!(out.starts_with(b"{\"error\""));
        assert!(out.ends_with(b"\"code\":5}\n{}"));
    }

    #[test]
    fn chunked_split_at_every_byte_boundary() {
        let mut whole = Vec::new();
        ChunkedDecoder::default().feed(CHUNKED, &mut whole).unwrap();
        for cut in 0..=CHUNKED.len() {
            let mut d = ChunkedDecoder::default();
            let mut out = Vec::new();
            let a = d.feed(&CHUNKED[..cut], &mut out).unwrap();
            let b = d.feed(&CHUNKED[a..], &mut out).unwrap();
            assert!(d.is_done(), "cut {cut}");
            assert_eq!(out, whole, "cut {cut}");
            assert_eq!(&CHUNKED[a + b..], b"HTTP/1.1", "cut {cut}");
        }
        // And one byte at a time.
        let mut d = ChunkedDecoder::default();
        let mut out = Vec::new();
        let mut i = 0;
        while !d.is_done() {
            i += d.feed(&CHUNKED[i..i + 1], &mut out).unwrap();
        }
        assert_eq!(out, whole);
    }

    #[test]
    fn chunked_errors() {
        for bad in [&b"zz\r\n"[..], b"3\r\nabcX\r\n", b"ffffffffffffffffffff\r\n"] {
            assert!(ChunkedDecoder::default().feed(bad, &mut Vec::new()).is_err(), "{bad:?}");
        }
        assert!(ChunkedDecoder::default().feed(&[b'1'; MAX_LINE + 10], &mut Vec::new()).is_err());
    }

    #[test]
    fn json_objects_split_anywhere() {
        let stream = b"{\"result\":{\"a\":\"}{\\\"\",\"b\":[1,{\"c\":2}]}}\n{\"x\":{}}\r\n  {}".as_slice();
        let want: Vec<&[u8]> = vec![b"{\"result\":{\"a\":\"}{\\\"\",\"b\":[1,{\"c\":2}]}}", b"{\"x\":{}}", b"{}"];
        for cut in 0..=stream.len() {
            let mut s = JsonSplitter::default();
            let mut got = Vec::new();
            for part in [&stream[..cut], &stream[cut..]] {
                s.push(part);
                while let Some(o) = s.next_object().unwrap() {
                    got.push(o);
                }
            }
            assert_eq!(got, want, "cut {cut}");
        }
        for o in &want {
            serde_json::from_slice::<serde_json::Value>(o).unwrap();
        }
        let mut s = JsonSplitter::default();
        s.push(b"[1]");
        assert!(s.next_object().is_err());
    }

    #[test]
    fn reads_from_a_socket() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 1024];
            // Two requests on one connection; responses written in awkward pieces.
            let responses = [
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
                [
                    &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
                    CHUNKED.strip_suffix(b"HTTP/1.1").unwrap(),
                ]
                .concat(),
            ];
            for (i, resp) in responses.iter().enumerate() {
                while req.windows(4).filter(|w| w == b"\r\n\r\n").count() <= i || !req.ends_with(b"{}") {
                    let n = s.read(&mut b).unwrap();
                    req.extend_from_slice(&b[..n]);
                }
                for piece in resp.chunks(7) {
                    s.write_all(piece).unwrap();
                    s.flush().unwrap();
                }
            }
            String::from_utf8(req).unwrap()
        });
        let ep = Endpoint::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        let mut c = Conn::connect(&ep, Duration::from_secs(5)).unwrap();
        c.send("/v3/kv/range", b"{}").unwrap();
        let h = c.read_head().unwrap();
        assert_eq!(c.read_body(&h).unwrap(), (b"{}".to_vec(), true));
        assert!(!c.is_stale());
        c.send("/v3/kv/put", b"{}").unwrap();
        let h = c.read_head().unwrap();
        let (body, reusable) = c.read_body(&h).unwrap();
        assert!(reusable && body.ends_with(b"\n{}"));
        let req = server.join().unwrap();
        assert!(req.starts_with(&format!("POST /v3/kv/range HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n")), "{req}");
        assert!(req.contains("Content-Length: 2\r\n"));
        assert!(c.is_stale(), "server closed the connection");
    }
}
