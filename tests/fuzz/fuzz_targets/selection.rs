//! Selection from queries and cookies: never panics on any bytes, and a
//! ticket a link selects round-trips through the cookie the proxy sets.
//! The same bytes as an origin's `No-Vary-Search`: amended, it parses, it
//! ignores none of the proxy's parameters, and needs no second amendment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stamp_data::testing::{
    classify, cookie_value, no_vary_search_keeping_ours, NoVarySearch, Selection, PROXY_PARAMS,
};

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
    if let NoVarySearch::Changed(amended) = no_vary_search_keeping_ours(data) {
        let dict = sfv::Parser::parse_dictionary(amended.as_bytes()).expect("parses");
        let names = |e: &sfv::ListEntry| -> Vec<String> {
            match e {
                sfv::ListEntry::InnerList(l) => l
                    .items
                    .iter()
                    .filter_map(|i| match &i.bare_item {
                        // Compared as browsers compare names: decoded.
                        sfv::BareItem::String(s) => Some(
                            url::form_urlencoded::parse(s.as_bytes())
                                .next()
                                .map(|(k, _)| k.into_owned())
                                .unwrap_or_default(),
                        ),
                        _ => None,
                    })
                    .collect(),
                sfv::ListEntry::Item(_) => Vec::new(),
            }
        };
        match dict.get("params") {
            Some(sfv::ListEntry::Item(i)) if i.bare_item == sfv::BareItem::Boolean(true) => {
                let except = dict.get("except").map(names).unwrap_or_default();
                for p in PROXY_PARAMS {
                    assert!(except.iter().any(|e| e == p), "{amended}: {p} ignored");
                }
            }
            Some(list) => {
                let ignored = names(list);
                assert!(
                    PROXY_PARAMS.iter().all(|p| !ignored.iter().any(|i| i == p)),
                    "{amended}"
                );
            }
            None => panic!("{amended}: params gone"),
        }
        assert_eq!(
            no_vary_search_keeping_ours(amended.as_bytes()),
            NoVarySearch::AsIs,
            "{amended}"
        );
    }
});
