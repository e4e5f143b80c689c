//! Checks shared by the fuzz targets and by `tests/fuzz_corpus.rs`, which replays the
//! committed seed corpus through them on every `cargo test` (cargo-fuzz needs nightly
//! features; the checks do not).
//!
//! - [`conn_ops`]: operation lists over several clients and a route peer, driven through
//!   the parser and the connection state machine, checked against a linear model.
//! - [`sublist_ops`]: insert/remove/match sequences on the subscription index, checked
//!   against a linear model.

pub mod conn_ops;
pub mod sublist_ops;
