//! The CSP editor: for arbitrary policies, the edited policies allow
//! nothing the original did not, apart from our own nonce and hash: every
//! directive keeps its sources, only ours are added, and none is removed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stamp_data::testing::page_policies;

const HASH: &str = "'sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA='";
const FRESH: &str = "fUzZnOnCe0123456789abc";

/// Directive name → sources, as a browser reads a policy (the first of a
/// repeated directive counts).
fn directives(policy: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for d in policy.split(';') {
        let mut words = d.split_ascii_whitespace();
        let Some(name) = words.next().map(str::to_ascii_lowercase) else {
            continue;
        };
        if out.iter().all(|(n, _)| *n != name) {
            out.push((name, words.map(str::to_string).collect()));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A header value: visible ASCII and spaces (no field carries others).
    if !text
        .bytes()
        .all(|b| b == b'\n' || b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return;
    }
    let policies: Vec<String> = text.split('\n').take(3).map(str::to_string).collect();
    let out = page_policies(&policies, &[], Some(HASH), None, FRESH);
    let Some(edited) = out.enforce else {
        return;
    };
    assert_eq!(
        edited.len(),
        policies.len(),
        "a policy was added or dropped"
    );
    let ours = |s: &str| s == HASH || s == format!("'nonce-{FRESH}'");
    // A header holds comma-separated policies, each enforced on its own.
    let split = |h: &String| h.split(',').map(str::to_string).collect::<Vec<_>>();
    let before_all: Vec<String> = policies.iter().flat_map(split).collect();
    let after_all: Vec<String> = edited.iter().flat_map(split).collect();
    assert_eq!(
        before_all.len(),
        after_all.len(),
        "{policies:?} -> {edited:?}"
    );
    for (before, after) in before_all.iter().zip(&after_all) {
        let (b, a) = (directives(before), directives(after));
        // Every directive that was there is there, with every source it had;
        // what is new is ours alone, and no directive is new.
        for (name, sources) in &b {
            let Some((_, now)) = a.iter().find(|(n, _)| n == name) else {
                panic!("{name} dropped: {before:?} -> {after:?}");
            };
            for s in sources {
                assert!(now.contains(s), "{s} dropped from {name}: {after:?}");
            }
            for s in now {
                assert!(
                    sources.contains(s) || ours(s),
                    "{s} added to {name}: {before:?} -> {after:?}"
                );
            }
        }
        for (name, _) in &a {
            assert!(
                b.iter().any(|(n, _)| n == name),
                "{name} added: {before:?} -> {after:?}"
            );
        }
    }
});
