//! The CLI's stamp.toml and package.json settings: see ../props.rs.
#![no_main]

#[path = "../props.rs"]
mod props;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        props::stamp_toml(text);
    }
});
