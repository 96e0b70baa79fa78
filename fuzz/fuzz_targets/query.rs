#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    cts_model::fuzzing::query(data);
});
