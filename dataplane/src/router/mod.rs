//! L3: what the switch answers itself (gateway ARP, ICMP echo). Routing comes later.
pub mod local;
