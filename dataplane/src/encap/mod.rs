//! Overlay encapsulation without I/O: VXLAN ([`vxlan`], RFC 7348), Ethernet over GRE
//! ([`gre`], RFC 2784 + RFC 2890 key) and Flannel-style IP-in-UDP ([`udp`]), all over an
//! outer IPv4 underlay.
//!
//! Owns: the wire formats, the outer-header policy ([`Vtep`]: TTL, DF, TOS, checksums,
//! source-port hashing, the IPv4 id counter) and the MTU arithmetic. It does not own
//! sockets, peers tables or clocks: every function is a pure transformation of caller
//! buffers, never allocates, never makes a syscall and never panics on any input
//! (malformed packets give a [`DecapError`], impossible requests an [`EncapError`]).
//!
//! Buffer model (see `buf.rs`): a frame sits at `buf[off..off + len]` with at least
//! `HEADROOM` bytes in front of it. [`encap`] writes the outer headers into that headroom
//! and returns where the outer packet starts ([`Encapped`]); decapsulation returns where
//! the inner frame is inside the same slice ([`Decapped`]). Nothing is copied except for
//! GSO super-frames, which must be cut into wire-size frames anyway ([`EncapSegments`]).
//!
//! What the outer packet is: an IPv4 datagram (no outer Ethernet header). Hand
//! `buf[e.off..e.end()]` to an `IP_HDRINCL` raw socket, prepend an Ethernet header with
//! [`prepend_eth`] for AF_PACKET, or give `buf[e.payload_off..e.end()]` to a UDP socket
//! (VXLAN, UDP) or an `IPPROTO_GRE` raw socket, which build their own outer IP header.
//!
//! Checksums: the outer IPv4 header checksum is always written. The outer UDP checksum is
//! 0 by default, which IPv4 allows (RFC 768) and RFC 7348 §5 recommends for VXLAN ("SHOULD
//! be transmitted as zero"): the inner frame carries its own checksums, and Open vSwitch
//! tunnels default to 0 as well. Linux `vxlan` devices (kernel 6.18 with iproute2
//! defaults, in our interop test) send a checksum and accept both. [`Vtep::tx_csum`]
//! computes it instead (one extra pass over the frame), and adds the optional GRE
//! checksum for GRE. Inner frames whose virtio header
//! says `NEEDS_CSUM` get their checksum completed before encapsulation, because the remote
//! end cannot complete it.

pub mod gre;
mod outer;
mod segment;
pub mod udp;
pub mod vxlan;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_gso;
#[cfg(test)]
pub(crate) mod tests_netns;
#[cfg(test)]
mod tests_util;

use std::net::Ipv4Addr;

pub use outer::{flow_hash_eth, flow_hash_ip, inner_tos_eth, inner_tos_ip};
pub use segment::{EncapSegments, UdpGsoBatch, UDP_GSO_MAX_PAYLOAD, UDP_GSO_MAX_SEGS};

use crate::offload::{complete_checksum, OffloadError};
use crate::vnet::{VnetHdr, F_DATA_VALID, F_NEEDS_CSUM};
use crate::wire::MacAddr;

/// Outer IPv4 header length (no options are ever sent).
pub const IPV4_HDR_LEN: usize = 20;
/// UDP header length.
pub const UDP_HDR_LEN: usize = 8;
/// Ethernet header length (the inner frame's, for MTU arithmetic).
pub const ETH_HDR_LEN: usize = 14;
/// Default outer source-port range for VXLAN/UDP flow hashing: the IANA dynamic range.
pub const SRC_PORT_MIN: u16 = 49152;
/// Upper end (inclusive) of the default source-port range.
pub const SRC_PORT_MAX: u16 = 65535;

/// A 24-bit VXLAN Network Identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(u32);

impl Vni {
    /// Largest VNI (2^24 - 1).
    pub const MAX: u32 = 0x00ff_ffff;

    /// A VNI, or `None` if `v` does not fit in 24 bits.
    pub const fn new(v: u32) -> Option<Vni> {
        if v <= Self::MAX {
            Some(Vni(v))
        } else {
            None
        }
    }

    /// The 24-bit value.
    pub const fn get(self) -> u32 {
        self.0
    }
}

/// Which encapsulation a remote port uses, with the network id it carries. Decapsulation
/// returns the same value, so a reply can be sent with what was received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tunnel {
    /// VXLAN with this VNI; the inner payload is an Ethernet frame.
    Vxlan(Vni),
    /// GRE with Transparent Ethernet Bridging (0x6558) and an optional key (K bit).
    Gre(Option<u32>),
    /// IP-in-UDP (Flannel `udp` backend): the inner payload is an IP packet.
    Udp,
}

impl Tunnel {
    /// The network id as a number: the VNI, the GRE key (0 without one), 0 for UDP. What
    /// the packet metadata's `tun_id` holds for decapsulated frames.
    pub fn id(self) -> u32 {
        match self {
            Tunnel::Vxlan(v) => v.get(),
            Tunnel::Gre(k) => k.unwrap_or(0),
            Tunnel::Udp => 0,
        }
    }
}

/// The shape of an encapsulation, for MTU arithmetic ([`overhead`], [`overlay_mtu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EncapKind {
    /// IPv4 + UDP + VXLAN (36 bytes) in front of an Ethernet frame.
    Vxlan,
    /// IPv4 + GRE (4 bytes, +4 with a key, +4 with a checksum) in front of an Ethernet frame.
    Gre {
        /// The K bit and a 4-byte key are present.
        key: bool,
        /// The C bit and a 4-byte checksum field are present.
        csum: bool,
    },
    /// IPv4 + UDP (28 bytes) in front of an IP packet.
    Udp,
}

impl EncapKind {
    /// Bytes written in front of the inner frame (VXLAN, GRE) or inner IP packet (UDP).
    pub const fn outer_hdr_len(self) -> usize {
        match self {
            EncapKind::Vxlan => IPV4_HDR_LEN + UDP_HDR_LEN + vxlan::HDR_LEN,
            EncapKind::Gre { key, csum } => {
                IPV4_HDR_LEN + gre::BASE_LEN + if key { 4 } else { 0 } + if csum { 4 } else { 0 }
            }
            EncapKind::Udp => IPV4_HDR_LEN + UDP_HDR_LEN,
        }
    }

    /// True when the inner payload is an Ethernet frame (VXLAN, GRE), false for IP (UDP).
    pub const fn carries_ethernet(self) -> bool {
        !matches!(self, EncapKind::Udp)
    }
}

/// Bytes an overlay packet costs on the underlay beyond the inner IP packet: the outer
/// headers plus, for Ethernet-carrying kinds, the inner 14-byte Ethernet header (inner
/// VLAN tags cost 4 more each). VXLAN 50; GRE 38 without a key, 42 with one (what Linux
/// gives a `gretap` on a 1500-byte link: 1462 / 1458), +4 with checksums; UDP 28.
pub const fn overhead(kind: EncapKind) -> u16 {
    let eth = if kind.carries_ethernet() { ETH_HDR_LEN } else { 0 };
    (kind.outer_hdr_len() + eth) as u16
}

/// The MTU of an overlay network (largest inner IP packet) on an underlay link of MTU
/// `underlay_mtu`: `underlay_mtu - overhead(kind)`, 0 if the underlay is too small.
pub const fn overlay_mtu(underlay_mtu: u16, kind: EncapKind) -> u16 {
    underlay_mtu.saturating_sub(overhead(kind))
}

/// How the outer IPv4 TOS byte is chosen. Either way the ECN bits follow RFC 6040 normal
/// mode like Linux tunnels: copied from the inner IPv4/IPv6 header, except that CE
/// becomes ECT(0) (non-IP inner frames give Not-ECT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tos {
    /// DSCP copied from the inner IPv4/IPv6 header (0 for non-IP inner frames).
    Inherit,
    /// This DSCP (the upper six bits of the value; the ECN bits are ignored).
    Fixed(u8),
}

/// The local tunnel endpoint: the outer-header policy of one encapsulation, owned by one
/// worker (it holds the IPv4 id counter, so it is `&mut` per packet and never shared).
///
/// One `Vtep` per tunnel kind and local address; the remote end and network id travel in
/// [`Peer`]. Fields are public configuration; construct with [`Vtep::vxlan`],
/// [`Vtep::gre`] or [`Vtep::udp`] for the defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vtep {
    /// Outer source address. Decapsulation also requires it as the outer destination,
    /// unless it is `0.0.0.0` (accept any).
    pub local_ip: Ipv4Addr,
    /// UDP destination port sent and expected (VXLAN 4789, UDP 8285; unused by GRE).
    pub port: u16,
    /// Outer TTL (default 64).
    pub ttl: u8,
    /// Set Don't Fragment on the outer header (default true; Linux `vxlan` devices leave
    /// it clear). Outer packets then must fit the path: [`EncapSegments`] sizes them to
    /// the MTU it is given. With DF set the id carries no meaning (RFC 6864), so
    /// per-worker counters that overlap are harmless.
    pub df: bool,
    /// Outer TOS policy (default [`Tos::Inherit`]).
    pub tos: Tos,
    /// Compute the outer UDP checksum instead of sending 0; for GRE, add the GRE checksum.
    /// Default false (see the module docs).
    pub tx_csum: bool,
    /// On decapsulation, verify the outer IPv4 header checksum, a non-zero UDP checksum
    /// and a present GRE checksum. Default true; turn off when the receiving socket has
    /// verified them already. Frames with a virtio-net header should go through
    /// [`decap_frame`], which skips UDP/GRE checksums the sender left to offload.
    pub verify_csum: bool,
    /// Lowest outer UDP source port picked by the flow hash.
    pub src_port_min: u16,
    /// Highest outer UDP source port (inclusive) picked by the flow hash.
    pub src_port_max: u16,
    /// Seed of the flow hash (set it randomly per host to make the spread unpredictable).
    pub hash_seed: u32,
    /// The IPv4 identification the next outer packet gets; incremented (wrapping) per
    /// packet.
    pub next_id: u16,
}

impl Vtep {
    fn with_port(local_ip: Ipv4Addr, port: u16) -> Vtep {
        Vtep {
            local_ip,
            port,
            ttl: 64,
            df: true,
            tos: Tos::Inherit,
            tx_csum: false,
            verify_csum: true,
            src_port_min: SRC_PORT_MIN,
            src_port_max: SRC_PORT_MAX,
            hash_seed: 0,
            next_id: 0,
        }
    }

    /// A VXLAN endpoint on `local_ip` with the IANA port 4789 and the defaults above.
    pub fn vxlan(local_ip: Ipv4Addr) -> Vtep {
        Self::with_port(local_ip, vxlan::PORT)
    }

    /// A GRE endpoint on `local_ip` with the defaults above.
    pub fn gre(local_ip: Ipv4Addr) -> Vtep {
        Self::with_port(local_ip, 0)
    }

    /// A Flannel-style UDP endpoint on `local_ip`, port 8285, with the defaults above.
    pub fn udp(local_ip: Ipv4Addr) -> Vtep {
        Self::with_port(local_ip, udp::PORT)
    }

    /// The shape of `tunnel` as this endpoint sends it (GRE checksum from `tx_csum`).
    pub fn kind_of(&self, tunnel: Tunnel) -> EncapKind {
        match tunnel {
            Tunnel::Vxlan(_) => EncapKind::Vxlan,
            Tunnel::Gre(key) => EncapKind::Gre { key: key.is_some(), csum: self.tx_csum },
            Tunnel::Udp => EncapKind::Udp,
        }
    }

    /// The outer UDP source port for a flow hash: `hash` scaled into
    /// `src_port_min..=src_port_max` (multiply-shift, like Linux `udp_flow_src_port`).
    pub fn src_port_for(&self, hash: u32) -> u16 {
        let (lo, hi) = (self.src_port_min.min(self.src_port_max), self.src_port_max.max(self.src_port_min));
        let span = (hi - lo) as u64 + 1;
        lo + ((hash as u64 * span) >> 32) as u16
    }

    /// Returns the id for the next outer packet and advances the counter.
    #[inline]
    pub fn take_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = id.wrapping_add(1);
        id
    }
}

/// A remote tunnel endpoint and the network id sent to it: what an overlay port of the
/// tables names. Copy, 12 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Outer destination address.
    pub remote: Ipv4Addr,
    /// Encapsulation and network id.
    pub tunnel: Tunnel,
}

/// Where an encapsulated packet lies in the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encapped {
    /// Offset of the outer IPv4 header.
    pub off: usize,
    /// Length of the outer IPv4 packet (its total length field).
    pub len: usize,
    /// Offset of what follows the outer IPv4 header for GRE (the GRE header) or the UDP
    /// header for VXLAN/UDP (the VXLAN header / inner IP packet): the bytes to give a
    /// socket that builds the outer headers itself.
    pub payload_off: usize,
    /// Outer UDP source port (0 for GRE).
    pub src_port: u16,
}

impl Encapped {
    /// One past the last byte of the outer packet.
    pub fn end(&self) -> usize {
        self.off + self.len
    }

    /// The outer IPv4 packet's range.
    pub fn ip_range(&self) -> core::ops::Range<usize> {
        self.off..self.end()
    }

    /// The socket-payload range (see [`Encapped::payload_off`]).
    pub fn payload_range(&self) -> core::ops::Range<usize> {
        self.payload_off..self.end()
    }
}

/// What decapsulation found. Offsets are relative to the slice that was decapsulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decapped {
    /// Encapsulation and network id (VNI, GRE key or none): send replies with it.
    pub tunnel: Tunnel,
    /// Offset of the inner Ethernet frame (VXLAN, GRE) or inner IP packet (UDP).
    pub inner_off: usize,
    /// Its length (for UDP, the inner IP length; trailing bytes are dropped).
    pub inner_len: usize,
    /// Outer source address (the remote VTEP, for learning); `0.0.0.0` when only a
    /// socket payload was decapsulated.
    pub outer_src: Ipv4Addr,
    /// Outer destination address; `0.0.0.0` when only a socket payload was decapsulated.
    pub outer_dst: Ipv4Addr,
    /// Outer UDP source port (0 for GRE and for socket payloads).
    pub src_port: u16,
    /// Outer TOS byte (for RFC 6040 ECN decapsulation by the caller; 0 for payloads).
    pub outer_tos: u8,
}

impl Decapped {
    /// The inner frame's (or packet's) range.
    pub fn inner_range(&self) -> core::ops::Range<usize> {
        self.inner_off..self.inner_off + self.inner_len
    }

    pub(crate) fn payload_only(tunnel: Tunnel, inner_off: usize, inner_len: usize) -> Decapped {
        Decapped {
            tunnel,
            inner_off,
            inner_len,
            outer_src: Ipv4Addr::UNSPECIFIED,
            outer_dst: Ipv4Addr::UNSPECIFIED,
            src_port: 0,
            outer_tos: 0,
        }
    }
}

/// Why encapsulation refused. None of these is fixed by retrying the same call, except
/// [`EncapError::BufferTooSmall`] with a bigger buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncapError {
    /// Fewer bytes in front of the frame than the outer headers need.
    NoHeadroom,
    /// `off + len` is past the end of the buffer.
    OutOfBounds,
    /// The outer IPv4 total length would exceed 65535.
    TooLong,
    /// A packet cannot be made to fit the MTU given to [`EncapSegments`] (a non-GSO frame
    /// or a UDP datagram too big, or headers leaving no room for TCP payload).
    ExceedsMtu,
    /// A GSO super-frame was given to [`encap`]: use [`EncapSegments`].
    NeedsSegmentation,
    /// UDP encapsulation of something that is not an IPv4/IPv6 packet.
    InnerNotIp,
    /// The inner frame is shorter than its Ethernet or IP header (or IP length).
    InnerTruncated,
    /// A `UDP_SEGMENT` batch was asked for GRE, which is not UDP.
    NotUdp,
    /// The output buffer is too small for the next packet (nothing was written).
    BufferTooSmall,
    /// Completing the inner checksum or segmenting failed.
    Offload(OffloadError),
}

impl EncapError {
    /// A short static description, for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EncapError::NoHeadroom => "no headroom for outer headers",
            EncapError::OutOfBounds => "frame outside buffer",
            EncapError::TooLong => "outer packet longer than 65535",
            EncapError::ExceedsMtu => "packet exceeds underlay mtu",
            EncapError::NeedsSegmentation => "gso frame needs segmentation",
            EncapError::InnerNotIp => "inner packet not ip",
            EncapError::InnerTruncated => "inner frame truncated",
            EncapError::NotUdp => "udp segmentation of a non-udp tunnel",
            EncapError::BufferTooSmall => "output buffer too small",
            EncapError::Offload(e) => e.as_str(),
        }
    }
}

impl core::fmt::Display for EncapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for EncapError {}

impl From<OffloadError> for EncapError {
    fn from(e: OffloadError) -> EncapError {
        EncapError::Offload(e)
    }
}

/// Why a received packet was not decapsulated; one counter per variant
/// ([`DecapError::index`]). Malformed input is data: none of these is worth a retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum DecapError {
    /// Shorter than its headers or than the lengths they claim.
    Truncated,
    /// Outer IP version is not 4.
    NotIpv4,
    /// Outer IHL below 5 or total length below the header length.
    BadIpHeader,
    /// Outer IPv4 header checksum wrong.
    IpChecksum,
    /// The outer packet is an IP fragment (reassembly is not done here).
    Fragment,
    /// Outer destination is not [`Vtep::local_ip`].
    NotForUs,
    /// Outer protocol is not the expected one (UDP, or 47 for GRE).
    WrongProtocol,
    /// UDP destination port is not [`Vtep::port`].
    WrongPort,
    /// UDP length field below 8 or beyond the IP payload.
    BadUdpLength,
    /// Non-zero UDP checksum wrong.
    UdpChecksum,
    /// VXLAN I flag not set.
    VxlanFlags,
    /// GRE version not 0.
    GreVersion,
    /// GRE routing or strict-source-route bits set (RFC 2784: discard).
    GreFlags,
    /// GRE protocol type is not Transparent Ethernet Bridging (0x6558).
    GreProtocol,
    /// GRE checksum present and wrong.
    GreChecksum,
    /// The inner frame is shorter than an Ethernet header, or the inner IP packet than
    /// its header / total length.
    InnerTruncated,
    /// UDP encapsulation whose payload is not IPv4 or IPv6.
    InnerNotIp,
}

impl DecapError {
    /// Number of variants (size of a counter array).
    pub const COUNT: usize = 17;

    /// Dense index for counter arrays (`0..COUNT`).
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short static description, for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DecapError::Truncated => "truncated",
            DecapError::NotIpv4 => "outer not ipv4",
            DecapError::BadIpHeader => "bad outer ipv4 header",
            DecapError::IpChecksum => "bad outer ipv4 checksum",
            DecapError::Fragment => "outer fragment",
            DecapError::NotForUs => "outer destination not local",
            DecapError::WrongProtocol => "wrong outer protocol",
            DecapError::WrongPort => "wrong udp port",
            DecapError::BadUdpLength => "bad udp length",
            DecapError::UdpChecksum => "bad udp checksum",
            DecapError::VxlanFlags => "vxlan i flag clear",
            DecapError::GreVersion => "gre version not 0",
            DecapError::GreFlags => "gre routing flags",
            DecapError::GreProtocol => "gre protocol not 0x6558",
            DecapError::GreChecksum => "bad gre checksum",
            DecapError::InnerTruncated => "inner frame truncated",
            DecapError::InnerNotIp => "inner packet not ip",
        }
    }
}

impl core::fmt::Display for DecapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for DecapError {}

/// Encapsulates the Ethernet frame at `buf[off..off + len]` for `peer`, in place: the
/// outer headers go into `buf[.. off]` (the headroom), and for [`Tunnel::Udp`] the
/// frame's Ethernet header (and VLAN tags) is dropped first, so the outer headers end
/// where the inner IP packet starts.
///
/// `vh` is the frame's virtio-net header: a `NEEDS_CSUM` frame has its checksum completed
/// in place first (the caller should then treat the result as a plain packet); a GSO frame
/// is refused with [`EncapError::NeedsSegmentation`] (use [`EncapSegments`]). Takes the
/// next IPv4 id from `vtep`. Outer size is not checked against any MTU.
///
/// Errors leave the inner frame unchanged except for a completed checksum. Never panics.
pub fn encap(
    vtep: &mut Vtep,
    peer: &Peer,
    buf: &mut [u8],
    off: usize,
    len: usize,
    vh: &VnetHdr,
) -> Result<Encapped, EncapError> {
    if vh.is_gso() {
        return Err(EncapError::NeedsSegmentation);
    }
    let end = off.checked_add(len).ok_or(EncapError::OutOfBounds)?;
    let frame = buf.get_mut(off..end).ok_or(EncapError::OutOfBounds)?;
    if frame.len() < ETH_HDR_LEN {
        return Err(EncapError::InnerTruncated);
    }
    complete_checksum(frame, vh)?;
    let inner_tos = inner_tos_eth(frame);
    let (ioff, ilen, hash) = match peer.tunnel {
        Tunnel::Udp => {
            let (l3, ip_len) = udp::locate_ip(frame)?;
            (off + l3, ip_len, flow_hash_ip(frame.get(l3..).unwrap_or(&[]), vtep.hash_seed))
        }
        _ => (off, len, flow_hash_eth(frame, vtep.hash_seed)),
    };
    let sport = vtep.src_port_for(hash);
    outer::write(vtep, peer, buf, ioff, ilen, sport, inner_tos)
}

/// Decapsulates an outer IPv4 packet (`pkt` starts at the outer IPv4 header) of the given
/// kind: dispatches to [`vxlan::decap`], [`gre::decap`] or [`udp::decap`].
pub fn decap(vtep: &Vtep, kind: EncapKind, pkt: &[u8]) -> Result<Decapped, DecapError> {
    decap_with(vtep, kind, pkt, vtep.verify_csum)
}

fn decap_with(vtep: &Vtep, kind: EncapKind, pkt: &[u8], verify_l4: bool) -> Result<Decapped, DecapError> {
    match kind {
        EncapKind::Vxlan => vxlan::decap_with(vtep, pkt, verify_l4),
        EncapKind::Gre { .. } => gre::decap_with(vtep, pkt, verify_l4),
        EncapKind::Udp => udp::decap_with(vtep, pkt, verify_l4),
    }
}

/// Decapsulates an underlay Ethernet frame as an AF_PACKET/TAP port with virtio-net
/// headers receives it (`frame` starts at the outer Ethernet header, up to two VLAN tags;
/// `vh` is its header). Offsets in the result are relative to `frame`; the second value
/// is the virtio header the inner frame carries on.
///
/// Offload state: a frame from a local stack (e.g. over a veth) is usually
/// CHECKSUM_PARTIAL (`NEEDS_CSUM`): its outer UDP/GRE checksum is not final (Linux
/// leaves it to offload, or computes it assuming the inner checksum will be filled in
/// later), so it is not verified, and neither is one already validated (`DATA_VALID`);
/// the outer IPv4 header checksum is still checked per [`Vtep::verify_csum`]. When
/// `csum_start` points into the inner frame, the inner frame is the one with the partial
/// checksum: the returned header says `NEEDS_CSUM` with `csum_start` relative to
/// `inner_off` (for [`Tunnel::Udp`], to the inner IP packet: add 14 after
/// [`prepend_eth`]). Otherwise the returned header is plain. GSO outer frames cannot be
/// described by a virtio header (Linux drops them before AF_PACKET), so `vh`'s GSO fields
/// are ignored.
///
/// Errors: those of [`decap`]; a non-IPv4 EtherType gives [`DecapError::NotIpv4`], a
/// frame shorter than its Ethernet header [`DecapError::Truncated`]. Never panics.
pub fn decap_frame(
    vtep: &Vtep,
    kind: EncapKind,
    frame: &[u8],
    vh: &VnetHdr,
) -> Result<(Decapped, VnetHdr), DecapError> {
    let (l3, et) = outer::l3_of(frame).ok_or(DecapError::Truncated)?;
    if et != 0x0800 {
        return Err(DecapError::NotIpv4);
    }
    let offloaded = vh.needs_csum() || vh.flags & F_DATA_VALID != 0;
    let pkt = frame.get(l3..).ok_or(DecapError::Truncated)?;
    let mut d = decap_with(vtep, kind, pkt, vtep.verify_csum && !offloaded)?;
    d.inner_off += l3;
    let mut ivh = VnetHdr::default();
    let cs = vh.csum_start as usize;
    if vh.needs_csum() && cs >= d.inner_off && cs < d.inner_off + d.inner_len {
        ivh = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: (cs - d.inner_off) as u16,
            csum_offset: vh.csum_offset,
            ..VnetHdr::default()
        };
    }
    Ok((d, ivh))
}

/// Writes an Ethernet header (`dst`, `src`, EtherType from the IP version nibble: 0x0800
/// or 0x86dd) in front of the IP packet at `buf[ip_off..ip_off + ip_len]`, into the
/// bytes before it, and returns the frame's `(offset, length)`. Used to turn a
/// decapsulated [`Tunnel::Udp`] packet into a frame for the bridge, or to put an outer
/// Ethernet header on an [`Encapped`] packet for AF_PACKET.
///
/// Errors: [`EncapError::NoHeadroom`] if `ip_off < 14`, [`EncapError::OutOfBounds`],
/// [`EncapError::InnerNotIp`] for an empty packet or another version. Never panics.
pub fn prepend_eth(
    buf: &mut [u8],
    ip_off: usize,
    ip_len: usize,
    dst: MacAddr,
    src: MacAddr,
) -> Result<(usize, usize), EncapError> {
    let end = ip_off.checked_add(ip_len).ok_or(EncapError::OutOfBounds)?;
    if end > buf.len() {
        return Err(EncapError::OutOfBounds);
    }
    let start = ip_off.checked_sub(ETH_HDR_LEN).ok_or(EncapError::NoHeadroom)?;
    let ethertype: u16 = match buf.get(ip_off).map(|b| b >> 4) {
        Some(4) if ip_len > 0 => 0x0800,
        Some(6) if ip_len > 0 => 0x86dd,
        _ => return Err(EncapError::InnerNotIp),
    };
    let h = &mut buf[start..ip_off];
    h[0..6].copy_from_slice(&dst.0);
    h[6..12].copy_from_slice(&src.0);
    h[12..14].copy_from_slice(&ethertype.to_be_bytes());
    Ok((start, ip_len + ETH_HDR_LEN))
}

#[inline]
pub(crate) fn rd16(b: &[u8], off: usize) -> u16 {
    match b.get(off..off.wrapping_add(2)) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

#[inline]
pub(crate) fn rd32(b: &[u8], off: usize) -> u32 {
    match b.get(off..off.wrapping_add(4)) {
        Some(&[a, b1, c, d]) => u32::from_be_bytes([a, b1, c, d]),
        _ => 0,
    }
}
