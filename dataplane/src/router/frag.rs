//! IPv4 fragmentation for routed packets larger than the egress MTU without DF
//! (RFC 791 3.2, RFC 1812 5.2.6): what a Linux router does instead of dropping them.
//!
//! Pure functions over byte slices: the caller asks how many fragments a packet makes,
//! then writes each into a buffer of its own. Every fragment carries the original's
//! Ethernet header, an IPv4 header (the first with all options, the others with the
//! options whose "copied" flag is set), and a slice of the payload whose length is a
//! multiple of 8 bytes except in the last one. A packet that already is a fragment is
//! fragmented again (offsets added, MF kept on the last piece). No allocation, no
//! panics on any input.

/// Why a packet cannot be fragmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FragError {
    /// Not a well-formed IPv4 packet at the offset given.
    Malformed,
    /// DF is set (the caller sends "fragmentation needed" instead).
    DontFragment,
    /// The MTU leaves no room for 8 bytes of payload after the header.
    MtuTooSmall,
    /// The buffer given for a fragment is too small.
    BufferTooSmall,
}

/// What the fragments of one packet are made of (from [`plan`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Offset of the IPv4 header in the frame (the Ethernet header's length).
    pub l3: usize,
    /// The original header's length, and the length of the later fragments' header.
    pub ihl: usize,
    pub ihl_rest: usize,
    /// Payload bytes in every fragment but the last (a multiple of 8).
    pub chunk: usize,
    /// Payload length of the original.
    pub payload: usize,
    /// Number of fragments.
    pub count: usize,
    /// The original's fragment offset (in bytes) and MF flag.
    pub base_off: usize,
    pub more: bool,
}

impl Plan {
    /// The largest frame any fragment makes.
    pub fn max_frame_len(&self) -> usize {
        self.l3 + self.ihl + self.chunk.min(self.payload)
    }
}

/// Length of the options of `opts` that later fragments carry (copied flag set),
/// rounded up to 4 bytes; writes them into `out` when given.
fn copied_options(opts: &[u8], mut out: Option<&mut [u8]>) -> Option<usize> {
    let mut n = 0;
    let mut i = 0;
    while i < opts.len() {
        let t = opts[i];
        match t {
            0 => break,
            1 => {
                i += 1;
                continue;
            }
            _ => {}
        }
        let len = usize::from(*opts.get(i + 1)?);
        if len < 2 || i + len > opts.len() {
            return None;
        }
        if t & 0x80 != 0 {
            if let Some(o) = out.as_deref_mut() {
                o.get_mut(n..n + len)?.copy_from_slice(&opts[i..i + len]);
            }
            n += len;
        }
        i += len;
    }
    let padded = (n + 3) & !3;
    if let Some(o) = out {
        // End-of-options padding.
        o.get_mut(n..padded)?.fill(0);
    }
    Some(padded)
}

/// How the IPv4 packet at `l3` of `frame` splits for `mtu` (the largest IP packet the
/// egress takes).
pub fn plan(frame: &[u8], l3: usize, mtu: usize) -> Result<Plan, FragError> {
    let h = frame.get(l3..l3 + 20).ok_or(FragError::Malformed)?;
    if h[0] >> 4 != 4 {
        return Err(FragError::Malformed);
    }
    let ihl = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if ihl < 20 || total < ihl || l3 + total > frame.len() {
        return Err(FragError::Malformed);
    }
    let frag = u16::from_be_bytes([h[6], h[7]]);
    if frag & 0x4000 != 0 {
        return Err(FragError::DontFragment);
    }
    let opts = &frame[l3 + 20..l3 + ihl];
    let ihl_rest = 20 + copied_options(opts, None).ok_or(FragError::Malformed)?;
    let payload = total - ihl;
    let chunk = mtu.saturating_sub(ihl) & !7;
    if chunk == 0 {
        return Err(FragError::MtuTooSmall);
    }
    let count = payload.div_ceil(chunk).max(1);
    Ok(Plan { l3, ihl, ihl_rest, chunk, payload, count, base_off: usize::from(frag & 0x1fff) * 8, more: frag & 0x2000 != 0 })
}

/// Writes fragment `k` (0-based, below `p.count`) of the packet in `frame` into `out`
/// (Ethernet header included) and returns its length. Header checksums are complete;
/// the payload (and with it any L4 checksum) is copied as it is.
pub fn write(frame: &[u8], p: &Plan, k: usize, out: &mut [u8]) -> Result<usize, FragError> {
    if k >= p.count {
        return Err(FragError::Malformed);
    }
    let start = k * p.chunk;
    let len = p.chunk.min(p.payload - start);
    let hl = if k == 0 { p.ihl } else { p.ihl_rest };
    let n = p.l3 + hl + len;
    let o = out.get_mut(..n).ok_or(FragError::BufferTooSmall)?;
    let src = frame.get(..p.l3 + p.ihl + p.payload).ok_or(FragError::Malformed)?;
    o[..p.l3 + 20].copy_from_slice(&src[..p.l3 + 20]);
    if k == 0 {
        o[p.l3 + 20..p.l3 + hl].copy_from_slice(&src[p.l3 + 20..p.l3 + p.ihl]);
    } else {
        copied_options(&src[p.l3 + 20..p.l3 + p.ihl], Some(&mut o[p.l3 + 20..p.l3 + hl])).ok_or(FragError::Malformed)?;
    }
    let body = p.l3 + p.ihl + start;
    o[p.l3 + hl..].copy_from_slice(&src[body..body + len]);
    let h = &mut o[p.l3..p.l3 + hl];
    h[0] = 0x40 | (hl / 4) as u8;
    h[2..4].copy_from_slice(&((hl + len) as u16).to_be_bytes());
    let last = k + 1 == p.count;
    let off = (p.base_off + start) / 8;
    let mf = if last { p.more } else { true };
    let field = (off as u16 & 0x1fff) | if mf { 0x2000 } else { 0 };
    h[6..8].copy_from_slice(&field.to_be_bytes());
    h[10] = 0;
    h[11] = 0;
    let c = crate::offload::csum::checksum(h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    Ok(n)
}

#[cfg(test)]
#[path = "tests_frag.rs"]
mod tests;
