//! Insert/remove/match sequences against the subscription index and a linear model; see
//! `ringnats_fuzz::sublist_ops`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ringnats_fuzz::sublist_ops::run(data));
