//! The merged-map endpoint's query (`/__stamp/map?v=…&src=…`): it never
//! panics, and what it agrees to fetch is the page's own origin outside
//! `/__stamp/`, or an allowed asset origin, over http(s), without
//! credentials: never an address of the request's choosing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stamp_data::testing::{map_query, map_target};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(q) = map_query(Some(query)) else {
        return;
    };
    let page = url::Url::parse("https://shop.example/app/").unwrap();
    let allowed = vec!["https://cdn.example".to_string()];
    let Ok((url, remote)) = map_target(&q.src, &page, &allowed) else {
        return;
    };
    assert!(matches!(url.scheme(), "http" | "https"), "{url}");
    assert!(
        url.username().is_empty() && url.password().is_none(),
        "{url}"
    );
    let origin = url.origin().ascii_serialization();
    if remote {
        assert_eq!(origin, "https://cdn.example", "{url}");
    } else {
        assert_eq!(origin, "https://shop.example", "{url}");
        assert!(
            url.path() != "/__stamp" && !url.path().starts_with("/__stamp/"),
            "{url} is reserved"
        );
    }
});
