//! What a shared HTTP cache may store and reuse, as RFC 9111 says (issue 12). For now it
//! holds the Cache-Control reader the rules will be built on.

// Cache-Control parsing has its own file beside this one; it is declared here so that
// src/http/mod.rs, which is being reworked elsewhere, gains only one line.
#[path = "cache_control.rs"]
pub(crate) mod cache_control;
