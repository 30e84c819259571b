//! DNS message codec (RFC 1035, EDNS0 from RFC 6891): just what a stub-facing server needs
//! that answers A/AAAA/PTR itself and forwards everything else byte for byte.
//!
//! * Reading follows compression pointers (only backwards, so no loop is possible), caps
//!   names at 255 bytes, and never indexes past the input: every failure is a
//!   [`WireError`], never a panic.
//! * Names are kept in uncompressed wire form with their original case ([`Name`]); lookups
//!   use the lowercase dotted [`Name::key`].
//! * The rdata of name-only types (PTR, CNAME, NS) is decompressed on read, so such records
//!   can be written again; the rdata of every other type is kept raw (and may hold
//!   compression pointers into the message it came from: re-encode only what you built).
//! * Writing compresses owner names equal to the (first) question name to a pointer to it
//!   (`0xC00C`); everything else is written uncompressed.
//! * The EDNS0 OPT pseudo-record is taken out of the additional section into
//!   [`Message::edns`] on read and written last on write.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Length of the fixed header.
pub const HEADER_LEN: usize = 12;
/// Longest name in wire form, including the root label.
pub const MAX_NAME_LEN: usize = 255;
/// Longest label.
pub const MAX_LABEL_LEN: usize = 63;
/// Largest UDP answer for a query without EDNS.
pub const MAX_UDP_PLAIN: usize = 512;
/// The UDP payload size this server advertises in its own OPT records (DNS flag day 2020).
pub const EDNS_UDP_SIZE: u16 = 1232;
/// Largest DNS message (the TCP length prefix is 16 bits).
pub const MAX_MESSAGE: usize = 65535;
/// Class IN.
pub const CLASS_IN: u16 = 1;

/// Record types used here.
pub mod rrtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Name server.
    pub const NS: u16 = 2;
    /// Canonical name.
    pub const CNAME: u16 = 5;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Reverse pointer.
    pub const PTR: u16 = 12;
    /// Mail exchanger.
    pub const MX: u16 = 15;
    /// Text.
    pub const TXT: u16 = 16;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// EDNS0 pseudo-record.
    pub const OPT: u16 = 41;
    /// Any type (query only).
    pub const ANY: u16 = 255;
}

/// Response codes (BADVERS is extended: its high bits go into the OPT record).
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// The query was malformed.
    pub const FORMERR: u8 = 1;
    /// Server failure (here also: no upstream answered).
    pub const SERVFAIL: u8 = 2;
    /// The name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// Opcode not implemented.
    pub const NOTIMP: u8 = 4;
    /// Refused by policy.
    pub const REFUSED: u8 = 5;
    /// Unsupported EDNS version (extended rcode 16).
    pub const BADVERS: u16 = 16;
}

/// Header flag bits (the second 16-bit word of the header).
pub mod flag {
    /// This is a response.
    pub const QR: u16 = 0x8000;
    /// Authoritative answer.
    pub const AA: u16 = 0x0400;
    /// Truncated.
    pub const TC: u16 = 0x0200;
    /// Recursion desired.
    pub const RD: u16 = 0x0100;
    /// Recursion available.
    pub const RA: u16 = 0x0080;
    /// Authentic data (DNSSEC).
    pub const AD: u16 = 0x0020;
    /// Checking disabled (DNSSEC).
    pub const CD: u16 = 0x0010;
    /// Mask of the opcode bits.
    pub const OPCODE_MASK: u16 = 0x7800;
    /// Mask of the (low 4 bits of the) rcode.
    pub const RCODE_MASK: u16 = 0x000f;
}

/// Why a message could not be read or a name could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// The message ends inside a field.
    Truncated,
    /// A label type other than plain or pointer (0x40/0x80), or an empty/oversized label.
    BadLabel,
    /// A name longer than 255 bytes.
    NameTooLong,
    /// A compression pointer that does not point strictly backwards.
    BadPointer,
    /// Rdata whose declared length does not match its content.
    BadRdata,
    /// More than one OPT record, or one whose owner is not the root.
    BadOpt,
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WireError::Truncated => "message truncated",
            WireError::BadLabel => "bad label",
            WireError::NameTooLong => "name longer than 255 bytes",
            WireError::BadPointer => "bad compression pointer",
            WireError::BadRdata => "bad rdata length",
            WireError::BadOpt => "bad OPT record",
        })
    }
}

impl std::error::Error for WireError {}

fn rd_u16(b: &[u8], at: usize) -> Result<u16, WireError> {
    match b.get(at..at + 2) {
        Some(s) => Ok(u16::from_be_bytes([s[0], s[1]])),
        None => Err(WireError::Truncated),
    }
}

fn rd_u32(b: &[u8], at: usize) -> Result<u32, WireError> {
    match b.get(at..at + 4) {
        Some(s) => Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]])),
        None => Err(WireError::Truncated),
    }
}

/// The fixed 12-byte header. Counts are what the message says; [`Message::encode`]
/// recomputes them from the sections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Query id.
    pub id: u16,
    /// QR, opcode, AA, TC, RD, RA, Z, AD, CD, rcode (see [`flag`]).
    pub flags: u16,
    /// Number of questions.
    pub qdcount: u16,
    /// Number of answer records.
    pub ancount: u16,
    /// Number of authority records.
    pub nscount: u16,
    /// Number of additional records (including OPT).
    pub arcount: u16,
}

impl Header {
    /// Reads the header at the start of `msg`.
    pub fn parse(msg: &[u8]) -> Result<Header, WireError> {
        Ok(Header {
            id: rd_u16(msg, 0)?,
            flags: rd_u16(msg, 2)?,
            qdcount: rd_u16(msg, 4)?,
            ancount: rd_u16(msg, 6)?,
            nscount: rd_u16(msg, 8)?,
            arcount: rd_u16(msg, 10)?,
        })
    }

    /// Appends the 12 header bytes.
    pub fn write(&self, out: &mut Vec<u8>) {
        for v in [self.id, self.flags, self.qdcount, self.ancount, self.nscount, self.arcount] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }

    /// True if any of the `bits` (see [`flag`]) is set.
    pub fn has(&self, bits: u16) -> bool {
        self.flags & bits != 0
    }

    /// Sets or clears the `bits`.
    pub fn set(&mut self, bits: u16, on: bool) {
        if on {
            self.flags |= bits;
        } else {
            self.flags &= !bits;
        }
    }

    /// The opcode (0 = QUERY).
    pub fn opcode(&self) -> u8 {
        ((self.flags & flag::OPCODE_MASK) >> 11) as u8
    }

    /// The low 4 bits of the rcode.
    pub fn rcode(&self) -> u8 {
        (self.flags & flag::RCODE_MASK) as u8
    }

    /// Sets the low 4 bits of the rcode.
    pub fn set_rcode(&mut self, rcode: u8) {
        self.flags = (self.flags & !flag::RCODE_MASK) | (rcode as u16 & flag::RCODE_MASK);
    }
}

/// A domain name in uncompressed wire form (length-prefixed labels ending with the root
/// label), case preserved. `==` is case-sensitive; see [`Name::eq_ignore_case`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Name {
    wire: Vec<u8>,
}

impl Name {
    /// The root name `.`.
    pub fn root() -> Name {
        Name { wire: vec![0] }
    }

    /// Builds a name from dotted text (`a.b`, `a.b.` or `.`). No escapes: every `.`
    /// separates labels; empty labels (other than the whole root) are rejected.
    pub fn from_dotted(s: &str) -> Result<Name, WireError> {
        let s = s.strip_suffix('.').unwrap_or(s);
        let mut wire = Vec::with_capacity(s.len() + 2);
        if !s.is_empty() {
            for label in s.split('.') {
                if label.is_empty() || label.len() > MAX_LABEL_LEN {
                    return Err(WireError::BadLabel);
                }
                wire.push(label.len() as u8);
                wire.extend_from_slice(label.as_bytes());
            }
        }
        wire.push(0);
        if wire.len() > MAX_NAME_LEN {
            return Err(WireError::NameTooLong);
        }
        Ok(Name { wire })
    }

    /// Reads a possibly compressed name at `pos` of `msg`; returns it and the position just
    /// after it (after the first pointer, if any). Pointers must point strictly before the
    /// start of the label run that contains them, which rules out loops.
    pub fn parse(msg: &[u8], pos: usize) -> Result<(Name, usize), WireError> {
        let mut wire = Vec::with_capacity(32);
        let mut p = pos;
        let mut limit = pos;
        let mut end = None;
        loop {
            let len = *msg.get(p).ok_or(WireError::Truncated)?;
            match len & 0xc0 {
                0x00 if len == 0 => {
                    wire.push(0);
                    let end = end.unwrap_or(p + 1);
                    return Ok((Name { wire }, end));
                }
                0x00 => {
                    let l = len as usize;
                    let label = msg.get(p + 1..p + 1 + l).ok_or(WireError::Truncated)?;
                    if wire.len() + 1 + l + 1 > MAX_NAME_LEN {
                        return Err(WireError::NameTooLong);
                    }
                    wire.push(len);
                    wire.extend_from_slice(label);
                    p += 1 + l;
                }
                0xc0 => {
                    let lo = *msg.get(p + 1).ok_or(WireError::Truncated)?;
                    let target = (((len & 0x3f) as usize) << 8) | lo as usize;
                    if end.is_none() {
                        end = Some(p + 2);
                    }
                    if target >= limit {
                        return Err(WireError::BadPointer);
                    }
                    limit = target;
                    p = target;
                }
                _ => return Err(WireError::BadLabel),
            }
        }
    }

    /// The uncompressed wire form.
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// The labels, without length bytes, from the leftmost.
    pub fn labels(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut p = 0;
        std::iter::from_fn(move || {
            let l = *self.wire.get(p)? as usize;
            if l == 0 {
                return None;
            }
            let label = self.wire.get(p + 1..p + 1 + l)?;
            p += 1 + l;
            Some(label)
        })
    }

    /// True for the root name.
    pub fn is_root(&self) -> bool {
        self.wire.len() == 1
    }

    /// Case-insensitive (ASCII) equality, as DNS compares names.
    pub fn eq_ignore_case(&self, other: &Name) -> bool {
        self.wire.eq_ignore_ascii_case(&other.wire)
    }

    /// The lookup key: lowercase, dot-separated, no trailing dot (`""` for the root).
    /// `None` if a label holds a byte that is not printable ASCII, a space, a dot or a
    /// backslash: such names can never be in the local table.
    pub fn key(&self) -> Option<String> {
        let mut s = String::with_capacity(self.wire.len());
        for label in self.labels() {
            if !s.is_empty() {
                s.push('.');
            }
            for &b in label {
                if !b.is_ascii_graphic() || b == b'.' || b == b'\\' {
                    return None;
                }
                s.push(b.to_ascii_lowercase() as char);
            }
        }
        Some(s)
    }

    /// Presentation form with a trailing dot; `.`, `\` and unprintable bytes are escaped.
    pub fn to_dotted(&self) -> String {
        let mut s = String::new();
        for label in self.labels() {
            for &b in label {
                match b {
                    b'.' | b'\\' => {
                        s.push('\\');
                        s.push(b as char);
                    }
                    0x21..=0x7e => s.push(b as char),
                    _ => s.push_str(&format!("\\{b:03}")),
                }
            }
            s.push('.');
        }
        if s.is_empty() {
            s.push('.');
        }
        s
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_dotted())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Name({})", self.to_dotted())
    }
}

/// One entry of the question section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The name asked for.
    pub name: Name,
    /// Record type (see [`rrtype`]).
    pub qtype: u16,
    /// Class (normally [`CLASS_IN`]).
    pub qclass: u16,
}

impl Question {
    fn parse(msg: &[u8], pos: usize) -> Result<(Question, usize), WireError> {
        let (name, p) = Name::parse(msg, pos)?;
        let q = Question { name, qtype: rd_u16(msg, p)?, qclass: rd_u16(msg, p + 2)? };
        Ok((q, p + 4))
    }

    /// Same name (ignoring case), type and class.
    pub fn matches(&self, other: &Question) -> bool {
        self.qtype == other.qtype && self.qclass == other.qclass && self.name.eq_ignore_case(&other.name)
    }
}

/// A resource record. See the module docs for how `rdata` is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Owner name.
    pub name: Name,
    /// Type (see [`rrtype`]).
    pub rtype: u16,
    /// Class.
    pub class: u16,
    /// Time to live in seconds.
    pub ttl: u32,
    /// Record data (decompressed for PTR/CNAME/NS).
    pub rdata: Vec<u8>,
}

impl Record {
    /// An A record of class IN.
    pub fn a(name: Name, ttl: u32, ip: Ipv4Addr) -> Record {
        Record { name, rtype: rrtype::A, class: CLASS_IN, ttl, rdata: ip.octets().to_vec() }
    }

    /// An AAAA record of class IN.
    pub fn aaaa(name: Name, ttl: u32, ip: Ipv6Addr) -> Record {
        Record { name, rtype: rrtype::AAAA, class: CLASS_IN, ttl, rdata: ip.octets().to_vec() }
    }

    /// A PTR record of class IN.
    pub fn ptr(name: Name, ttl: u32, target: &Name) -> Record {
        Record { name, rtype: rrtype::PTR, class: CLASS_IN, ttl, rdata: target.wire().to_vec() }
    }

    /// The address of an A record.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        let b: [u8; 4] = self.rdata.as_slice().try_into().ok()?;
        (self.rtype == rrtype::A).then(|| Ipv4Addr::from(b))
    }

    /// The address of an AAAA record.
    pub fn ipv6(&self) -> Option<Ipv6Addr> {
        let b: [u8; 16] = self.rdata.as_slice().try_into().ok()?;
        (self.rtype == rrtype::AAAA).then(|| Ipv6Addr::from(b))
    }

    /// The target name of a PTR, CNAME or NS record.
    pub fn target(&self) -> Option<Name> {
        if !matches!(self.rtype, rrtype::PTR | rrtype::CNAME | rrtype::NS) {
            return None;
        }
        let (n, end) = Name::parse(&self.rdata, 0).ok()?;
        (end == self.rdata.len()).then_some(n)
    }

    fn parse(msg: &[u8], pos: usize) -> Result<(Record, usize), WireError> {
        let (name, p) = Name::parse(msg, pos)?;
        let rtype = rd_u16(msg, p)?;
        let class = rd_u16(msg, p + 2)?;
        let ttl = rd_u32(msg, p + 4)?;
        let len = rd_u16(msg, p + 8)? as usize;
        let start = p + 10;
        let raw = msg.get(start..start + len).ok_or(WireError::Truncated)?;
        let rdata = if matches!(rtype, rrtype::PTR | rrtype::CNAME | rrtype::NS) {
            let (n, end) = Name::parse(msg, start)?;
            if end != start + len {
                return Err(WireError::BadRdata);
            }
            n.wire
        } else {
            raw.to_vec()
        };
        Ok((Record { name, rtype, class, ttl, rdata }, start + len))
    }

    fn write(&self, out: &mut Vec<u8>, qname: Option<&Name>) {
        match qname {
            Some(q) if q.eq_ignore_case(&self.name) => out.extend_from_slice(&[0xc0, HEADER_LEN as u8]),
            _ => out.extend_from_slice(self.name.wire()),
        }
        out.extend_from_slice(&self.rtype.to_be_bytes());
        out.extend_from_slice(&self.class.to_be_bytes());
        out.extend_from_slice(&self.ttl.to_be_bytes());
        let len = self.rdata.len().min(u16::MAX as usize);
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&self.rdata[..len]);
    }
}

/// The EDNS0 OPT pseudo-record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edns {
    /// Largest UDP payload the sender can take (the OPT "class").
    pub udp_size: u16,
    /// High 8 bits of the 12-bit rcode.
    pub ext_rcode: u8,
    /// EDNS version (0).
    pub version: u8,
    /// Flags; bit 15 is DO (DNSSEC OK).
    pub flags: u16,
    /// Raw options (code, length, data)*.
    pub options: Vec<u8>,
}

impl Edns {
    /// The DO bit.
    pub const DO: u16 = 0x8000;

    fn from_record(r: &Record) -> Result<Edns, WireError> {
        if !r.name.is_root() {
            return Err(WireError::BadOpt);
        }
        Ok(Edns {
            udp_size: r.class,
            ext_rcode: (r.ttl >> 24) as u8,
            version: (r.ttl >> 16) as u8,
            flags: r.ttl as u16,
            options: r.rdata.clone(),
        })
    }

    fn to_record(&self) -> Record {
        Record {
            name: Name::root(),
            rtype: rrtype::OPT,
            class: self.udp_size,
            ttl: (self.ext_rcode as u32) << 24 | (self.version as u32) << 16 | self.flags as u32,
            rdata: self.options.clone(),
        }
    }

    /// The largest UDP answer a client that sent this OPT can take (512..=4096).
    pub fn max_udp(&self) -> usize {
        (self.udp_size as usize).clamp(MAX_UDP_PLAIN, 4096)
    }
}

/// A whole DNS message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Message {
    /// Header (counts are recomputed on encode).
    pub header: Header,
    /// Question section.
    pub questions: Vec<Question>,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section.
    pub authority: Vec<Record>,
    /// Additional section without the OPT record.
    pub additional: Vec<Record>,
    /// The OPT record, if any.
    pub edns: Option<Edns>,
}

impl Message {
    /// Reads a whole message. Bytes after the last record are ignored.
    pub fn parse(msg: &[u8]) -> Result<Message, WireError> {
        let header = Header::parse(msg)?;
        let mut m = Message { header, ..Default::default() };
        let mut p = HEADER_LEN;
        for _ in 0..header.qdcount {
            let (q, next) = Question::parse(msg, p)?;
            m.questions.push(q);
            p = next;
        }
        for (i, count) in [header.ancount, header.nscount, header.arcount].into_iter().enumerate() {
            for _ in 0..count {
                let (r, next) = Record::parse(msg, p)?;
                p = next;
                match i {
                    0 => m.answers.push(r),
                    1 => m.authority.push(r),
                    _ if r.rtype == rrtype::OPT => {
                        if m.edns.is_some() {
                            return Err(WireError::BadOpt);
                        }
                        m.edns = Some(Edns::from_record(&r)?);
                    }
                    _ => m.additional.push(r),
                }
            }
        }
        Ok(m)
    }

    /// A query (opcode QUERY, class IN) for one name with the given id.
    pub fn query(id: u16, name: Name, qtype: u16, recursion_desired: bool) -> Message {
        let mut header = Header { id, ..Default::default() };
        header.set(flag::RD, recursion_desired);
        Message { header, questions: vec![Question { name, qtype, qclass: CLASS_IN }], ..Default::default() }
    }

    /// An empty response to `query`: same id, opcode, RD and CD, QR and RA set, the
    /// question copied, no EDNS (add it if wanted).
    pub fn response_to(query: &Message) -> Message {
        let keep = flag::OPCODE_MASK | flag::RD | flag::CD;
        let header = Header { id: query.header.id, flags: (query.header.flags & keep) | flag::QR | flag::RA, ..Default::default() };
        Message { header, questions: query.questions.clone(), ..Default::default() }
    }

    /// The full (12-bit) rcode.
    pub fn rcode(&self) -> u16 {
        self.header.rcode() as u16 | self.edns.as_ref().map_or(0, |e| (e.ext_rcode as u16) << 4)
    }

    /// Sets the rcode, extended bits into the OPT record (which must exist for codes > 15).
    pub fn set_rcode(&mut self, rcode: u16) {
        self.header.set_rcode((rcode & 0xf) as u8);
        if let Some(e) = self.edns.as_mut() {
            e.ext_rcode = (rcode >> 4) as u8;
        }
    }

    /// Encodes the message without any size limit.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_limited(MAX_MESSAGE)
    }

    /// Encodes the message in at most `max` bytes where possible: answer and authority
    /// records that do not fit are left out and TC is set (additional records are left out
    /// silently); the question and the OPT record are always kept.
    pub fn encode_limited(&self, max: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(512);
        let mut h = self.header;
        out.resize(HEADER_LEN, 0);
        for q in &self.questions {
            out.extend_from_slice(q.name.wire());
            out.extend_from_slice(&q.qtype.to_be_bytes());
            out.extend_from_slice(&q.qclass.to_be_bytes());
        }
        let qname = self.questions.first().map(|q| &q.name);
        let opt = self.edns.as_ref().map(Edns::to_record);
        let reserve = opt.as_ref().map_or(0, |o| 11 + o.rdata.len());
        let mut counts = [0u16; 3];
        let mut full = false;
        for (i, list) in [&self.answers, &self.authority, &self.additional].into_iter().enumerate() {
            for r in list {
                if full || counts[i] == u16::MAX {
                    break;
                }
                let mark = out.len();
                r.write(&mut out, qname);
                if out.len() + reserve > max {
                    out.truncate(mark);
                    full = true;
                    if i < 2 {
                        h.set(flag::TC, true);
                    }
                    break;
                }
                counts[i] += 1;
            }
        }
        if let Some(o) = &opt {
            o.write(&mut out, None);
            counts[2] += 1;
        }
        h.qdcount = self.questions.len().min(u16::MAX as usize) as u16;
        h.ancount = counts[0];
        h.nscount = counts[1];
        h.arcount = counts[2];
        let mut hb = Vec::with_capacity(HEADER_LEN);
        h.write(&mut hb);
        out[..HEADER_LEN].copy_from_slice(&hb);
        out
    }
}

/// Reads the header and the first question (if any) of a message: enough to match an
/// upstream response to its query without parsing the rest.
pub fn peek_question(msg: &[u8]) -> Result<(Header, Option<Question>), WireError> {
    let h = Header::parse(msg)?;
    if h.qdcount == 0 {
        return Ok((h, None));
    }
    let (q, _) = Question::parse(msg, HEADER_LEN)?;
    Ok((h, Some(q)))
}

/// What to do with a query that [`parse_query`] refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// Send nothing: too short to carry an id, or a response (QR set), which must never be
    /// answered (loops).
    Drop,
    /// Answer with this rcode (FORMERR or NOTIMP), echoing the question when it could be read.
    Reply {
        /// The query's header.
        header: Header,
        /// The first question, when readable.
        question: Option<Question>,
        /// FORMERR or NOTIMP.
        rcode: u8,
    },
}

/// Reads a query: a standard QUERY (opcode 0) with exactly one question. Other opcodes get
/// NOTIMP, anything unreadable FORMERR.
pub fn parse_query(msg: &[u8]) -> Result<Message, QueryError> {
    let header = Header::parse(msg).map_err(|_| QueryError::Drop)?;
    if header.has(flag::QR) {
        return Err(QueryError::Drop);
    }
    let first = || peek_question(msg).ok().and_then(|(_, q)| q);
    if header.opcode() != 0 {
        return Err(QueryError::Reply { header, question: first(), rcode: rcode::NOTIMP });
    }
    if header.qdcount != 1 {
        return Err(QueryError::Reply { header, question: None, rcode: rcode::FORMERR });
    }
    Message::parse(msg).map_err(|_| QueryError::Reply { header, question: first(), rcode: rcode::FORMERR })
}

/// A bare error response (no records) to a query with this header.
pub fn error_response(header: &Header, question: Option<&Question>, rc: u8) -> Vec<u8> {
    let keep = flag::OPCODE_MASK | flag::RD | flag::CD;
    let mut h = Header { id: header.id, flags: (header.flags & keep) | flag::QR | flag::RA, ..Default::default() };
    h.set_rcode(rc);
    let m = Message { header: h, questions: question.cloned().into_iter().collect(), ..Default::default() };
    m.encode()
}

/// The truncated form of a response that is too large for the client: its header with TC
/// set, its question, and nothing else. `None` if the response cannot be read.
pub fn truncated(response: &[u8]) -> Option<Vec<u8>> {
    let (mut h, q) = peek_question(response).ok()?;
    h.set(flag::TC, true);
    let m = Message { header: h, questions: q.into_iter().collect(), ..Default::default() };
    Some(m.encode())
}

#[cfg(test)]
#[path = "tests/wire.rs"]
pub(crate) mod tests;
