//! Deciding what to do with one query: answer it from the name table, refuse it, or hand it
//! to the forwarder. A pure function of (query bytes, asking sandbox, table), so it is
//! tested and fuzzed without sockets.
//!
//! Local answers: AA and RA set, RD/CD copied, TTL from the config (600 like Docker), owner
//! names compressed to the question. A name that is local but has no record of the asked
//! type (AAAA for an endpoint without IPv6, MX, TXT, ...) gets NOERROR with no answer
//! (NODATA) rather than being forwarded, so sandbox names never leak upstream. ANY returns
//! the A and AAAA records. Only class IN is answered locally.
//!
//! EDNS: when the query has an OPT record, so does the answer (our UDP size
//! [`EDNS_UDP_SIZE`], DO copied, no options); a version other than 0 gets BADVERS. The UDP
//! answer is limited to what the client can take (512 bytes without EDNS); records that do
//! not fit are left out and TC is set.

use super::names::{parse_reverse, NameTable};
use super::wire::{self, error_response, flag, rcode, rrtype, Edns, Message, Name, Question, Record, CLASS_IN, EDNS_UDP_SIZE};

/// The outcome for one query.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send these bytes back; `local` if answered from the table (not an error reply).
    Reply {
        /// The encoded response.
        bytes: Vec<u8>,
        /// Its (extended) rcode.
        rcode: u16,
        /// Answered from the name table.
        local: bool,
    },
    /// Forward the query bytes unchanged (but for the id) to the sandbox's upstreams.
    Forward {
        /// The question, to match the upstream's answer.
        question: Question,
        /// The largest UDP answer the client can take.
        max_udp: usize,
    },
    /// Send nothing.
    Drop,
}

/// Decides what to do with the query `msg` from `asker` (a sandbox name). `tcp` lifts the
/// UDP size limit of local answers.
pub(crate) fn handle_query(msg: &[u8], asker: &str, names: &NameTable, ttl: u32, tcp: bool) -> Action {
    let query = match wire::parse_query(msg) {
        Ok(q) => q,
        Err(wire::QueryError::Drop) => return Action::Drop,
        Err(wire::QueryError::Reply { header, question, rcode }) => {
            return Action::Reply { bytes: error_response(&header, question.as_ref(), rcode), rcode: rcode as u16, local: false };
        }
    };
    let Some(q) = query.questions.first() else {
        return Action::Drop;
    };
    let max = if tcp { wire::MAX_MESSAGE } else { query.edns.as_ref().map_or(wire::MAX_UDP_PLAIN, Edns::max_udp) };
    if let Some(e) = &query.edns {
        if e.version != 0 {
            let mut r = Message::response_to(&query);
            r.edns = Some(Edns { udp_size: EDNS_UDP_SIZE, ..Default::default() });
            r.set_rcode(rcode::BADVERS);
            return Action::Reply { bytes: r.encode_limited(max), rcode: rcode::BADVERS, local: false };
        }
    }
    let forward = Action::Forward { question: q.clone(), max_udp: max };
    if q.qclass != CLASS_IN {
        return forward;
    }
    let Some(key) = q.name.key() else { return forward };
    let mut answers = Vec::new();
    if let Some(ip) = parse_reverse(&key) {
        let Some(target) = names.lookup_addr(asker, ip) else { return forward };
        if matches!(q.qtype, rrtype::PTR | rrtype::ANY) {
            match Name::from_dotted(&target) {
                Ok(t) => answers.push(Record::ptr(q.name.clone(), ttl, &t)),
                Err(_) => return forward,
            }
        }
    } else {
        let Some(addrs) = names.lookup_name(asker, &key) else { return forward };
        if matches!(q.qtype, rrtype::A | rrtype::ANY) {
            answers.extend(addrs.v4.iter().map(|ip| Record::a(q.name.clone(), ttl, *ip)));
        }
        if matches!(q.qtype, rrtype::AAAA | rrtype::ANY) {
            answers.extend(addrs.v6.iter().map(|ip| Record::aaaa(q.name.clone(), ttl, *ip)));
        }
    }
    let mut r = Message::response_to(&query);
    r.header.set(flag::AA, true);
    r.answers = answers;
    r.edns = query.edns.as_ref().map(|e| Edns { udp_size: EDNS_UDP_SIZE, flags: e.flags & Edns::DO, ..Default::default() });
    Action::Reply { bytes: r.encode_limited(max), rcode: rcode::NOERROR as u16, local: true }
}

/// SERVFAIL for the query `query` (the client's bytes): its id, question and EDNS echoed.
pub(crate) fn servfail(query: &[u8]) -> Vec<u8> {
    match Message::parse(query) {
        Ok(q) => {
            let mut r = Message::response_to(&q);
            r.edns = q.edns.as_ref().map(|e| Edns { udp_size: EDNS_UDP_SIZE, flags: e.flags & Edns::DO, ..Default::default() });
            r.set_rcode(rcode::SERVFAIL as u16);
            r.encode()
        }
        Err(_) => {
            let h = wire::Header::parse(query).unwrap_or_default();
            error_response(&h, None, rcode::SERVFAIL)
        }
    }
}

#[cfg(test)]
#[path = "tests/resolve.rs"]
mod tests;
