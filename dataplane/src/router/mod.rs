//! L3: the gateway answers (local), the routing table (fib), neighbours (neigh, ARP),
//! ICMP errors and TTL (icmp). The router stage itself is pipeline/route.rs.
pub mod dhcp;
pub mod fib;
pub mod frag;
pub mod icmp;
pub mod local;
pub mod local6;
pub mod neigh;
