//! Feeds arbitrary bytes to every decode path of diam-proto: header parsing,
//! `check_frame`, `FrameDecoder`, `Message::decode`, typed values of every
//! format on every AVP (each treated as Grouped too), dictionary validation
//! and byte-identical `rebuild`. The checks live in
//! `crates/diam-proto/tests/common/exercise.rs`, shared with the stable
//! test `tests/fuzz_stable.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
mod exercise {
    include!("../../crates/diam-proto/tests/common/exercise.rs");
}

fuzz_target!(|data: &[u8]| {
    exercise::exercise(data);
});
