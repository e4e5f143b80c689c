//! The sans-IO protocol core.
//!
//! Bytes in, ops out: [`Parser`] turns the bytes a peer sent, in chunks of any size, into
//! [`Op`]s; [`ProtoError`] holds the exact `-ERR` texts; [`subject`] has the subject rules;
//! [`info`] builds the INFO line and decodes CONNECT/INFO JSON. Nothing here touches a
//! socket, a timer or the clock.

pub mod error;
pub mod info;
pub mod parser;
pub mod subject;

pub use error::ProtoError;
pub use parser::{Op, OwnedOp, Parsed, Parser, ParserConfig};
