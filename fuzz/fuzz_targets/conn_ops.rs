//! Operation lists (connect, sub, unsub, pub, hpub, ping, garbage, close, stalls, time,
//! a route peer) against the connection state machine; see `ringnats_fuzz::conn_ops`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringnats_fuzz::conn_ops::run(data));
