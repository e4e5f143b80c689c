//! ringnats: a NATS message server, wire-compatible with gnatsd 1.0 (clients and cluster
//! routes), built on one io_uring reactor per core.
//!
//! # Layout
//! - [`proto`]: the sans-IO protocol core. An incremental parser of client and route ops,
//!   the exact `-ERR` texts, INFO/CONNECT JSON, subject validation. No sockets, no clock.
//! - [`sublist`]: the subscription index: a token trie behind a lock for writes and a
//!   bounded, lock-free (epoch-reclaimed) result cache for lookups.
//! - [`conn`]: the sans-IO connection state machine shared by every kind (client, route):
//!   ops and `now` in, staged output and a closing reason out; subscriptions with their
//!   origin, and delivery with the cluster's one-hop and queue rules.
//! - [`auth`]: users, permissions (2.x wildcard rules), bcrypt off the reactors.
//! - [`cluster`]: the route table, client URLs learned from peers, the dial schedule.
//! - [`tls`]: client TLS, sans-IO (rustls between the received bytes and the parser, and
//!   between the outbound queue and the send), and the settings → rustls config.
//! - [`outbound`]: a connection's bounded outbound queue, shared across reactors, and the
//!   per-batch staging of output.
//! - [`mailbox`]: typed cross-reactor messages and the wake-up handle.
//! - [`shared`]: server state below the reactors: options, index, cluster, registry.
//! - [`reactor`]: the io_uring shell: rings, provided buffers, accept/recv/send/connect,
//!   timers, cross-reactor wake-ups. Moves bytes; decides nothing about the protocol.
//! - [`reload`]: config reload on SIGHUP: the diff of old and new options (sans-IO) and
//!   its application (swapped options, cluster routes, reactor mail).
//! - [`server`]: start-up: listeners, one reactor thread per core, shutdown.
//! - [`options`]: command-line flags in gnatsd's spelling.
//! - [`config`]: the gnatsd config file format, sans-IO: text in, a positioned tree of values out.
//! - [`log`]: gnatsd-format log lines (`[pid] date [INF] ...`), queued to one writer thread
//!   (stderr, a file, or syslog).
//! - [`control`]: `-sl/--signal`: find a running server and signal it.

#[macro_use]
pub mod log;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod control;
pub mod mailbox;
pub mod monitor;
pub mod options;
pub mod outbound;
pub mod proto;
pub mod reactor;
pub mod reload;
pub mod server;
pub mod shared;
pub mod stats;
pub mod sublist;
pub mod tls;
