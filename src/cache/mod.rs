//! The cache process: what it holds ([`store`]), how it fills at start ([`preload`]), how
//! it answers the queue ([`daemon`]) and the segments it keeps mapped ([`mappings`]).

pub mod daemon;
pub mod mappings;
pub mod preload;
pub mod store;
