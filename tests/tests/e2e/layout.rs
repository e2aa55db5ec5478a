//! The dependency rule between the planes, read from `cargo metadata`:
//! data never depends on control, control and the model have no Pingora
//! (nor the model tokio), and the CLI depends on the model alone.

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
