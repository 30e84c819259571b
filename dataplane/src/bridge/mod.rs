//! L2 bridging: the MAC table. Forwarding decisions live in `pipeline`.
pub mod fdb;
