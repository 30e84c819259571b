//! vswitchd dataplane: everything that touches packets. See `shared/design.md`.
//!
//! Nothing in here depends on the control plane; control publishes tables
//! (`tables`) and sends port commands to the workers (`worker`).

pub mod vnet;
