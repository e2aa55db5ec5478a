//! A Rails app's config/importmap.rb, as the CLI reads it: see ../props.rs.
#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        props::importmap_rb(text);
    }
});
