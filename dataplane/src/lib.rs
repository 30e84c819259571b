//! vswitchd dataplane: everything that touches packets. See `shared/design.md`.
//!
//! Nothing in here depends on the control plane; control publishes tables
//! (`tables`) and sends port commands to the workers (`worker`).

pub mod bridge;
pub mod buf;
pub mod clock;
pub mod encap;
pub mod fxhash;
pub mod mesh;
pub mod nat;
pub mod offload;
pub mod pipeline;
pub mod poll;
pub mod port;
pub mod router;
pub mod stats;
pub mod tables;
pub mod vnet;
pub mod wire;
pub mod worker;
