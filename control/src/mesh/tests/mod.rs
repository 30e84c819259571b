//! Tests of the mesh core: wire formats, single-core rules, and simulations of whole
//! meshes on a fake network with a virtual clock.

mod liveness;
mod ring;
mod scenarios;
mod sim;
mod unit;
mod wire;
