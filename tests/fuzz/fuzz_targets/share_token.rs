//! Share tokens and preview passes: verifying arbitrary text never panics
//! and never admits; a minted token verifies, and any change to it does not.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use stamp_model::share::Signer;
use stamp_model::ticket::{TicketKey, View};

fuzz_target!(|data: &[u8]| {
    let signer = Signer::new(
        b"0123456789abcdef0123456789abcdef",
        Duration::from_secs(3600),
    );
    let key = TicketKey::parse("TKT-1").unwrap();
    let text = String::from_utf8_lossy(data);
    let minted = signer.mint(&key, View::Dev, 3);
    assert!(signer.verify(Some(&minted), &key, View::Dev, 3).is_ok());
    // Whatever the fuzzer writes verifies only if it is a genuine token
    // (one this signer mints for its expiry: libFuzzer learns them from
    // comparisons, and one minted a second ago is genuine too).
    let genuine = text
        .split('.')
        .next()
        .and_then(|e| e.parse::<u64>().ok())
        .is_some_and(|exp| {
            signer
                .mint_at(&key, View::Dev, 3, exp)
                .eq_ignore_ascii_case(&text)
        });
    if !genuine {
        assert!(
            signer.verify(Some(&text), &key, View::Dev, 3).is_err(),
            "{text}"
        );
    }
    assert!(signer.verify(Some(&minted), &key, View::Qa, 3).is_err());
    assert!(signer.verify(Some(&minted), &key, View::Dev, 4).is_err());
    let _ = signer.verify_pass(Some(&text));
    if !text.starts_with("p1.") {
        assert!(signer.verify_pass(Some(&text)).is_none());
    }
});
