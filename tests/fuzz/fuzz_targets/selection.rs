//! Selection from queries and cookies: never panics on any bytes, and a
//! ticket a link selects round-trips through the cookie the proxy sets.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stamp_data::testing::{classify, cookie_value, Selection};

fuzz_target!(|data: &[u8]| {
    let cut = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (query, cookies) = data.split_at(cut);
    let query = std::str::from_utf8(query).ok();
    let cookie_headers: Vec<&[u8]> = cookies.split(|b| *b == b'\n').collect();
    let c = classify(query, cookie_headers.iter().copied(), "ticket_stamp");
    // What a query selected, the cookie set for it selects again.
    if let Selection::Ticket { key, view, .. } = c.selection {
        let cookie = format!("ticket_stamp={}", cookie_value(&key, view, None));
        let again = classify(None, [cookie.as_bytes()], "ticket_stamp");
        match again.selection {
            Selection::Ticket {
                key: k, view: v, ..
            } => assert_eq!((k, v), (key, view)),
            other => panic!("{cookie} selected {other:?}"),
        }
    }
});
