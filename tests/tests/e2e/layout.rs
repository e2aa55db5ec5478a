//! The dependency rules. Between the planes, read from `cargo metadata`:
//! data never depends on control, control and the model have no Pingora
//! (nor the model tokio), and the CLI depends on the model alone. Inside
//! each crate, read from its source: top-level modules form layers, with
//! no circle between them, directly or through others.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// Package name → names of its normal (non-dev) dependencies.
fn dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .args(["--manifest-path", manifest])
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut map = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        let deps = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| d["name"].as_str().unwrap().to_string())
            .collect();
        map.insert(p["name"].as_str().unwrap().to_string(), deps);
    }
    map
}

/// Every package `root` reaches through workspace crates, itself included.
fn reach(deps: &BTreeMap<String, BTreeSet<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        if seen.insert(p.clone()) {
            todo.extend(deps.get(&p).into_iter().flatten().cloned());
        }
    }
    seen
}

#[test]
fn the_planes_depend_the_way_the_readme_says() {
    let deps = dependencies();
    let data = reach(&deps, "stamp-data");
    assert!(
        !data.contains("stamp-control"),
        "data reaches control: {data:?}"
    );
    let control = reach(&deps, "stamp-control");
    assert!(!control.contains("stamp-data"), "{control:?}");
    assert!(
        !control.iter().any(|p| p.starts_with("pingora")),
        "control reaches pingora: {control:?}"
    );
    let model = reach(&deps, "stamp-model");
    for banned in ["tokio", "pingora", "stamp-store", "reqwest", "redis"] {
        assert!(
            !model.contains(banned),
            "the model reaches {banned}: {model:?}"
        );
    }
    let cli: Vec<&String> = deps["stamp-cli"]
        .iter()
        .filter(|d| d.starts_with("stamp-"))
        .collect();
    assert_eq!(cli, ["stamp-model"], "the CLI's workspace dependencies");
    let cli_all = reach(&deps, "stamp-cli");
    assert!(
        !cli_all.iter().any(|p| p.starts_with("pingora")),
        "{cli_all:?}"
    );
    for plane in ["stamp-model", "stamp-store", "stamp-data", "stamp-control"] {
        assert!(
            deps["stamp-proxy"].contains(plane),
            "the binary composes {plane}"
        );
    }
}

/// Top-level module → the top-level modules of the same crate it names
/// (`crate::x`, `crate::{x, y::z}`, or `super::x` in a top-level file),
/// read from the source with comments left out. A parent and its own
/// children are one node: the rule is about siblings.
fn module_graph(src: &std::path::Path) -> BTreeMap<String, BTreeSet<String>> {
    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    fn without_comments(text: &str) -> String {
        text.lines()
            .map(|l| match l.find("//") {
                Some(i) => &l[..i],
                None => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
    fn idents_after(text: &str, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for part in group[..end].split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    out.push(name);
                }
            } else {
                out.push(
                    rest.chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect(),
                );
            }
        }
        out
    }
    let mut modules: BTreeMap<String, Vec<std::path::PathBuf>> = BTreeMap::new();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let p = e.path();
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            let mut files = Vec::new();
            rust_files(&p, &mut files);
            modules.entry(name).or_default().extend(files);
        } else if p.extension().is_some_and(|x| x == "rs") && name != "lib" && name != "main" {
            modules.entry(name).or_default().push(p);
        }
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (name, files) in &modules {
        let mut deps = BTreeSet::new();
        for f in files {
            let text = without_comments(&std::fs::read_to_string(f).unwrap());
            let mut found = idents_after(&text, "crate::");
            let top_level =
                f == &src.join(format!("{name}.rs")) || f == &src.join(name).join("mod.rs");
            if top_level {
                found.extend(idents_after(&text, "super::"));
            }
            deps.extend(found.into_iter().filter(|d| names.contains(d) && d != name));
        }
        graph.insert(name.clone(), deps);
    }
    graph
}

/// A circle in `graph`, as the path that closes it, if there is one.
fn circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for d in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(d, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|n| visit(n, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_crate_has_a_circle_between_its_top_level_modules() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let crates = [
        "proxy/stamp-model/src",
        "proxy/stamp-store/src",
        "proxy/stamp-data/src",
        "proxy/stamp-control/src",
        "proxy/stamp-proxy/src",
        "cli/src",
        "benches/src",
        "tests/src",
    ];
    for krate in crates {
        let graph = module_graph(&root.join(krate));
        assert!(
            graph.len() > 1 || krate == "benches/src",
            "{krate}: {graph:?}"
        );
        if let Some(c) = circle(&graph) {
            panic!(
                "{krate}: top-level modules use each other in a circle: {}. Move what both \
                 need into a module below them (see proxy/ARCHITECTURE.md).",
                c.join(" -> ")
            );
        }
    }
}

#[test]
fn the_circle_check_finds_circles() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a; mod b; mod c;").unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::b::X; // crate::c in a comment\n",
    )
    .unwrap();
    std::fs::create_dir(src.join("b")).unwrap();
    std::fs::write(src.join("b/mod.rs"), "mod inner;").unwrap();
    std::fs::write(src.join("b/inner.rs"), "use crate::{c::Y, a};").unwrap();
    std::fs::write(src.join("c.rs"), "pub struct Y;").unwrap();
    let graph = module_graph(src);
    assert_eq!(graph["a"], BTreeSet::from(["b".to_string()]));
    assert_eq!(
        graph["b"],
        BTreeSet::from(["a".to_string(), "c".to_string()])
    );
    assert_eq!(
        circle(&graph),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
    std::fs::write(src.join("b/inner.rs"), "use crate::c::Y;").unwrap();
    assert_eq!(circle(&module_graph(src)), None);
}

/// The scripts shipped inside the binary (the panel, the probe) parse: a
/// syntax error there breaks every page that carries them, and no Rust
/// compiler sees it.
#[test]
fn the_scripts_the_proxy_ships_parse() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (file, module) in [
        ("proxy/stamp-control/panel/panel.js", true),
        ("proxy/stamp-data/src/probe.js", false),
    ] {
        let path = root.join(file);
        let mut cmd = std::process::Command::new("node");
        if module {
            // An ES module: checked as one.
            cmd.args(["--input-type=module", "--check"]);
            cmd.stdin(std::fs::File::open(&path).unwrap());
        } else {
            cmd.arg("--check").arg(&path);
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("node is needed (tests/install-deps installs it): {e}"));
        assert!(
            out.status.success(),
            "{file} does not parse:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
