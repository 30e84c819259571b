//! Ports: where packets enter and leave the dataplane. This module and its children
//! are the only code that makes packet syscalls.
//!
//! A `Port` value is one worker's handle on a port: its own AF_PACKET socket of the
//! port's fanout group, or its own queue of a multi-queue TAP. Workers never share a
//! `Port`, so nothing here locks.

pub mod afpacket;
pub mod mem;
pub mod meshlink;
pub mod steer;
pub mod tap;
pub mod tunnel;

use std::io;
use std::os::fd::RawFd;

use crate::buf::{Batch, BufPool, PktId, PortId};

/// What a port can take on transmit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortCaps {
    /// Frames carry a virtio-net header: GSO super-frames and partial checksums pass.
    pub vnet: bool,
}

/// Outcome of one receive call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxCount {
    /// Frames appended to the batch.
    pub received: usize,
    /// Frames dropped because they did not fit a buffer.
    pub oversize: usize,
    /// Frames dropped because they were shorter than their virtio-net header.
    pub truncated: usize,
    /// Frames the kernel could only cut short (a large frame when the socket's queue was
    /// full): dropped, and counted as the port's `rx_dropped` like the kernel's own drops.
    pub lost: usize,
}

/// Outcome of one transmit call over a slice of packets: the first `sent + errors`
/// were consumed (sent, or refused for good by the kernel); the rest could not be sent
/// now (queue full) and are the caller's to retry or drop.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxCount {
    pub sent: usize,
    pub errors: usize,
    pub bytes: u64,
}

/// Errors of a port operation.
#[derive(Debug)]
pub enum PortError {
    /// The port is gone (interface deleted, TAP detached): stop polling it.
    Gone(io::Error),
    /// Something else; try again later.
    Other(io::Error),
}

impl PortError {
    pub(crate) fn from_io(e: io::Error) -> PortError {
        match e.raw_os_error() {
            Some(libc::EBADFD) | Some(libc::ENODEV) | Some(libc::ENXIO) | Some(libc::EBADF) => PortError::Gone(e),
            _ => PortError::Other(e),
        }
    }
}

impl std::fmt::Display for PortError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PortError::Gone(e) => write!(f, "port gone: {e}"),
            PortError::Other(e) => write!(f, "{e}"),
        }
    }
}

/// One worker's handle on a port.
pub trait Port: Send {
    /// Receives up to `max` frames into buffers from `pool`, appending them to `out`
    /// with `in_port` set. `Ok` with `received == 0` means nothing to read now.
    fn rx_batch(&mut self, pool: &mut BufPool, in_port: PortId, out: &mut Batch, max: usize) -> Result<RxCount, PortError>;

    /// Transmits `pkts` in order (buffers stay owned by the caller). May write the
    /// virtio-net header into each buffer's headroom.
    fn tx_batch(&mut self, pool: &mut BufPool, pkts: &[PktId]) -> Result<TxCount, PortError>;

    fn caps(&self) -> PortCaps;

    /// The descriptor to poll for readability, if any.
    fn raw_fd(&self) -> Option<RawFd>;

    /// Short kind name for logs ("afpacket", "tap", "mem").
    fn kind(&self) -> &'static str;

    /// Frames the kernel dropped on the way to this handle since the last call (for
    /// AF_PACKET: the socket's receive queue overflowed). Called about once a second.
    fn kernel_drops(&mut self) -> u64 {
        0
    }

    /// Frames the kernel sent to another worker's handle of this port since the last
    /// call because this one was behind (fanout rollover, TAP steering). Called about
    /// once a second.
    fn steered_away(&mut self) -> u64 {
        0
    }

    /// Frames from this port belong to different ports (a tunnel's receive socket):
    /// the worker finds each frame's port from its tunnel metadata.
    fn demux(&self) -> bool {
        false
    }
}
