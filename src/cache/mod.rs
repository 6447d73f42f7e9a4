//! The cache process: what it holds ([`entries`]), how it fills at start ([`preload`]), and
//! what it does for each call of the protocol ([`service`]); the receive loop itself is
//! the protocol's ([`crate::ipc::server`]).

pub mod entries;
pub mod preload;
pub mod service;
