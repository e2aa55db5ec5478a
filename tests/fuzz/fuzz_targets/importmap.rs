//! The import-map merge over arbitrary map text: it never panics; what it
//! returns is valid JSON with an `imports` object; every specifier the page
//! mapped is still mapped; and merging its own output again changes
//! nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let page = url::Url::parse("https://shop.example/app/").unwrap();
    let set = common::overrides(&["/src/app.js", "/src/lib/greet.js", "/assets/x.css"]);
    let Ok(out) = stamp_data::testing::merge(text, &set, &page, 1 << 16) else {
        return;
    };
    let merged: serde_json::Value = serde_json::from_str(&out).expect("the merge wrote JSON");
    assert!(merged["imports"].is_object(), "{out}");
    if let Ok(serde_json::Value::Object(original)) = serde_json::from_str(text) {
        if let Some(serde_json::Value::Object(imports)) = original.get("imports") {
            for k in imports.keys() {
                assert!(merged["imports"].get(k).is_some(), "{k} lost: {out}");
            }
        }
    }
    let again =
        stamp_data::testing::merge(&out, &set, &page, 1 << 17).expect("its own output merges");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&again).unwrap(),
        merged,
        "merging twice changed {text}"
    );
});
