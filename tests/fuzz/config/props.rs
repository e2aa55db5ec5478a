//! What must hold of any text given as a configuration file, shared by the
//! cargo-fuzz targets of this directory and by `e2e::config_props` (which
//! replays the corpus and seeded mutations of it in every `cargo test`):
//! - the proxy's file either builds a configuration or is refused with
//!   problems that each name the file (or the flag that won), the same way
//!   every time;
//! - the CLI's stamp.toml and package.json either give settings or are
//!   refused with problems that each name the file; settings that resolve
//!   have an absolute folder without control characters, a URL path that
//!   starts with `/`, and an http(s) server.
//!
//! - a Rails app's `config/importmap.rb` read by the CLI: the same pins
//!   every time, every path they name inside the app, every name a file
//!   gets a bare specifier.
//!
//! Never a panic. The listen address comes from a flag, so no input makes
//! a check resolve a host name.

use std::path::Path;

pub fn proxy_toml(text: &str) {
    use stamp_proxy::config::{Config, Flags};
    let flags = Flags {
        listen: Some("127.0.0.1:0".into()),
        ..Flags::default()
    };
    // Every secret counts as set, so an input gets as far as it can.
    let first = Config::from_toml_with(&flags, text, "fuzz.toml", |_| true);
    let again = Config::from_toml_with(&flags, text, "fuzz.toml", |_| true);
    match (first, again) {
        (Ok(_), Ok(_)) => {}
        (Err(a), Err(b)) => {
            assert!(!a.problems.is_empty(), "refused without a reason");
            for p in &a.problems {
                assert!(
                    p.starts_with("fuzz.toml") || p.contains("--"),
                    "{p:?} names no file or flag"
                );
            }
            assert_eq!(a.problems, b.problems, "not the same problems twice");
        }
        (a, b) => panic!("the same text gave {:?} then {:?}", a.is_ok(), b.is_ok()),
    }
}

pub fn stamp_toml(text: &str) {
    use stamp_cli::config::{parse, parse_package, resolve, Flags};
    let dir = Path::new("/nonexistent-stamp-fuzz/shop");
    for (name, parsed) in [
        ("stamp.toml", parse(text, &dir.join("stamp.toml"))),
        (
            "package.json",
            parse_package(text, &dir.join("package.json")),
        ),
    ] {
        let fc = match parsed {
            Ok(fc) => fc,
            Err(e) => {
                assert!(!e.problems.is_empty(), "{name}: refused without a reason");
                for p in &e.problems {
                    assert!(p.contains(name), "{p:?} does not name {name}");
                }
                continue;
            }
        };
        let no_env = |_: &str| None;
        match resolve(&Flags::default(), &no_env, Some((dir.join(name), fc)), dir) {
            Ok(s) => {
                assert!(s.folder.is_absolute(), "{name}: folder {:?}", s.folder);
                assert!(
                    !s.folder.to_string_lossy().chars().any(char::is_control),
                    "{name}: a folder with a control character: {:?}",
                    s.folder
                );
                if let Some((_, url)) = &s.url_path {
                    assert!(url.starts_with('/'), "{name}: url_path {url:?}");
                }
                assert!(
                    s.server.starts_with("http://") || s.server.starts_with("https://"),
                    "{name}: server {:?}",
                    s.server
                );
            }
            Err(e) => {
                assert!(!e.problems.is_empty(), "{name}: refused without a reason");
            }
        }
    }
}

pub fn importmap_rb(text: &str) {
    use stamp_cli::rails::Pins;
    let root = Path::new("/nonexistent-stamp-fuzz/shop");
    let pins = Pins::parse(root, text);
    assert_eq!(pins, Pins::parse(root, text), "not the same pins twice");
    for path in pins.paths() {
        assert!(path.starts_with(root), "{} leaves the app", path.display());
        assert!(
            path.components().all(|c| matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::RootDir
            )),
            "{} is not a plain path",
            path.display()
        );
    }
    for file in [
        "app/javascript/application.js",
        "app/javascript/controllers/index.js",
        "app/javascript/controllers/hello_controller.js",
    ] {
        for name in pins.names(&root.join(file)) {
            assert!(
                stamp_model::wire::is_bare_specifier(&name),
                "{file} named {name:?}, no bare specifier"
            );
        }
    }
}
