//! Runs one rewriter over a generated page a given number of times, for an
//! instruction count that machine noise cannot blur:
//!
//!     cargo build --release -p stamp-benches --example rewrite-count
//!     valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!         target/release/examples/rewrite-count stamp 20480 500
//!
//! Modes: `noop` (lol_html, no handlers), `one` (lol_html, one no-op
//! `script` handler: the floor), `stamp` (the proxy's rewriter). Run it with
//! 0 iterations too and subtract, to leave out start-up.

use stamp_benches::{noop_parse, one_handler_parse, page, rewrite, spec};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: rewrite-count noop|one|stamp BYTES ITERATIONS";
    let (Some(mode), Some(bytes), Some(n)) = (args.get(1), args.get(2), args.get(3)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let (Ok(bytes), Ok(n)) = (bytes.parse::<usize>(), n.parse::<usize>()) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let html = page(bytes, 40);
    let s = spec(3);
    let shared = bytes::Bytes::from(html.clone());
    let mut out = 0usize;
    for _ in 0..n {
        out += match mode.as_str() {
            "noop" => noop_parse(html.as_bytes()),
            "one" => one_handler_parse(html.as_bytes()),
            "stamp" => rewrite(&shared, &s),
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        };
    }
    println!("{out}");
}
