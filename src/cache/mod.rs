//! The cache process: what it holds ([`store`]), how it fills at start ([`preload`]) and
//! how it answers the queue ([`daemon`]).

pub mod daemon;
pub mod preload;
pub mod store;
