//! ringnats: a NATS message server, wire-compatible with gnatsd 1.0, built on one
//! io_uring reactor per core.
//!
//! # Layout
//! - [`proto`]: the sans-IO protocol core. An incremental parser of client ops, the
//!   exact `-ERR` texts, INFO/CONNECT JSON, subject validation. No sockets, no clock.
//! - [`sublist`]: the subscription index: a token trie behind a mutex for writes and a
//!   bounded, lock-free (epoch-reclaimed) result cache for lookups.
//! - [`client`]: per-connection protocol state (verbose, pedantic, auth, subscriptions,
//!   keepalive); turns parsed ops into actions. Knows nothing of io_uring.
//! - [`outbound`]: a connection's bounded outbound queue, shared across reactors, and the
//!   per-batch wake-up bookkeeping.
//! - [`reactor`]: the io_uring shell: ring setup, provided buffer ring, multishot accept and
//!   recv, coalesced sends, timers, cross-reactor wake-ups.
//! - [`server`]: start-up: options, listeners, one reactor thread per core, signals.
//! - [`options`]: command-line flags in gnatsd's spelling.
//! - [`config`]: the gnatsd config file format, sans-IO: text in, a positioned tree of values out.
//! - [`log`]: gnatsd-format log lines (`[pid] date [INF] ...`).

#[macro_use]
pub mod log;
pub mod client;
pub mod config;
pub mod options;
pub mod outbound;
pub mod proto;
pub mod reactor;
pub mod server;
pub mod sublist;
