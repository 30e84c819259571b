//! vswitchd control plane: desired state, IPAM, namespaces and links (netlink), the
//! JSON API, and the glue that compiles state into dataplane tables. Depends on the
//! dataplane, never the other way round.

pub mod api;
pub mod cluster;
pub mod controller;
pub mod daemon;
pub mod dns;
pub mod dp;
pub mod etcd;
pub mod endpoint;
pub mod ipam;
pub mod mesh;
pub mod meshd;
pub mod model;
pub mod netlink;
pub mod netns;
pub mod proxy;
pub mod publish;
pub mod server;
pub mod store;
