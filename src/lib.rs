//! rustproxy: a Redis sharding proxy.
//!
//! The crate is a library so that `tests/` and `examples/` can embed the proxy and use its
//! pieces (parser, hash functions, ring) directly; `src/main.rs` is only the command line.
//!
//! Module map (arrows point toward the leaves, see README "Architecture"):
//! `proxy` (event loop) -> `client`, `backend`, `router`, `chain`, `stats`;
//! `router` -> `commands`, `ring`, `resp`; `ring` -> `hash`;
//! `config` (a folder: model, keys, formats) -> `hash`, `ring`, `commands`;
//! `auth` (users, command permissions, renames) -> `commands`, `config` (whose model declares
//! the `Level` and `AdminPolicy` that auth re-exports);
//! `pool` -> `hotkeys` (hot-key detection), `hotcache` (the hot-key cache's data structure).

pub mod auth;
pub mod backend;
pub mod chain;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod combine;
pub mod commands;
pub mod config;
pub mod hash;
pub mod hotcache;
pub mod hotkeys;
pub mod metrics;
pub mod net;
pub mod pool;
pub mod proxy;
pub mod rebalance;
pub mod resp;
pub mod ring;
pub mod router;
pub mod stats;
pub mod tls;
