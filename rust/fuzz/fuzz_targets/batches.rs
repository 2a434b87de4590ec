#![no_main]
//! Arbitrary Arrow batches through `ltrcore_core::accumulate` and `Partial::finalize`, checked against the plain reference
//! (all the logic is in `ltrcore_fuzz::check`; see `rust/fuzz/run.sh`).
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ltrcore_fuzz::check(data));
