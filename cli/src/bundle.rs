//! Build folders (a bundler's output): how one is recognised, and which of
//! its files are entries that replace production's by pattern.
//!
//! A bundle names its files by content hash (`index-BuR3Dq2X.js`), so the
//! ticket's build and production's never share an entry's name. Each entry
//! is uploaded with an entry pattern as its specifier
//! (`/assets/index-[hash:8].js`); the proxy points the page's element for
//! whatever production file matches the pattern at the ticket's file. The
//! entries come from the build's manifest (Vite's `.vite/manifest.json`, a
//! webpack assets manifest) or, failing that, from the built `index.html`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use stamp_model::assets::EntryPattern;

use crate::paths;

/// Manifests a bundler writes, relative to the build folder.
const MANIFESTS: [&str; 4] = [
    ".vite/manifest.json",
    "manifest.json",
    "asset-manifest.json",
    "assets-manifest.json",
];

/// Whether `folder` looks like a bundler's output: a manifest, or an
/// `index.html` next to hashed files.
pub fn looks_built(folder: &Path) -> bool {
    MANIFESTS
        .iter()
        .any(|m| paths::join_slash(folder, m).is_file())
        || folder.join("index.html").is_file()
}

/// Files of a build folder that are never uploaded: the pages and the
/// manifests themselves.
pub fn is_build_metadata(folder: &Path, file: &Path) -> bool {
    let Some(rel) = paths::relative_slash(folder, file) else {
        return false;
    };
    rel.ends_with(".html") || MANIFESTS.contains(&rel.as_str())
}

/// The files a finished build leaves that a build under way has not
/// written yet: its manifests and its `index.html`. Bundlers empty the
/// folder first and write these with the rest, so one that was there and is
/// gone says a build is under way.
pub fn finish_markers(folder: &Path) -> Vec<PathBuf> {
    MANIFESTS
        .iter()
        .map(|m| paths::join_slash(folder, m))
        .chain([folder.join("index.html")])
        .filter(|p| p.is_file())
        .collect()
}

/// The build's entries: file → the pattern it replaces production's file by.
#[derive(Debug, Default, Clone)]
pub struct Entries {
    pub patterns: BTreeMap<PathBuf, String>,
    /// Where they were read from (for `-v`).
    pub source: Option<String>,
}

/// Reads the entries of the build in `folder`, served at `url_base`.
pub fn entries(folder: &Path, url_base: &str) -> Entries {
    let mut found: Vec<(PathBuf, Option<String>)> = Vec::new();
    let mut source = None;
    for m in MANIFESTS {
        let Ok(text) = std::fs::read_to_string(paths::join_slash(folder, m)) else {
            continue;
        };
        let Ok(json) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let before = found.len();
        manifest_entries(&json, folder, url_base, &mut found);
        if found.len() > before {
            source = Some(m.to_string());
            break;
        }
    }
    if found.is_empty() {
        if let Ok(html) = std::fs::read_to_string(folder.join("index.html")) {
            for url in html_entries(&html) {
                if let Some(file) = file_of_url(folder, url_base, &url) {
                    found.push((file, None));
                }
            }
            if !found.is_empty() {
                source = Some("index.html".to_string());
            }
        }
    }
    let mut patterns = BTreeMap::new();
    for (file, name) in found {
        let Some(location) = paths::url_of(folder, &file, url_base) else {
            continue;
        };
        if let Some(p) = EntryPattern::for_file(&location, name.as_deref()) {
            patterns.insert(file, p);
        }
    }
    // Two entries of one pattern (a multi-page build's two `index-….js`)
    // cannot be told apart on the page: both are uploaded by their paths.
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for p in patterns.values() {
        *count.entry(p.clone()).or_default() += 1;
    }
    patterns.retain(|_, p| count.get(p) == Some(&1));
    Entries { patterns, source }
}

/// Vite: `{"index.html": {"file": "assets/index-….js", "name": "index",
/// "isEntry": true, "css": ["assets/index-….css"]}}`. webpack (assets
/// manifest plugins): `{"main.js": "/static/js/main.….js"}`, possibly under
/// `"files"`.
fn manifest_entries(
    json: &Value,
    folder: &Path,
    url_base: &str,
    out: &mut Vec<(PathBuf, Option<String>)>,
) {
    let Some(map) = json.get("files").unwrap_or(json).as_object() else {
        return;
    };
    for (key, value) in map {
        match value {
            Value::Object(chunk) => {
                let entry = chunk.get("isEntry").and_then(Value::as_bool) == Some(true);
                if !entry {
                    continue;
                }
                let name = chunk
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string);
                // Relative to the build folder, `/` (or `\` from a tool
                // on Windows); nothing outside it.
                if let Some(file) = chunk
                    .get("file")
                    .and_then(Value::as_str)
                    .and_then(|f| paths::manifest_file(folder, f))
                {
                    out.push((file, name));
                }
                for css in chunk
                    .get("css")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter_map(|css| paths::manifest_file(folder, css))
                {
                    out.push((css, None));
                }
            }
            Value::String(url) => {
                // `main.js` → `main`: the logical name settles the hash.
                let ext_ok = [".js", ".mjs", ".css"].iter().any(|e| key.ends_with(e));
                if !ext_ok || key.contains('/') && !key.starts_with("static/") {
                    continue;
                }
                let name = key
                    .rsplit('/')
                    .next()
                    .and_then(|k| k.split('.').next())
                    .map(str::to_string);
                if let Some(file) = file_of_url(folder, url_base, url) {
                    out.push((file, name));
                }
            }
            _ => {}
        }
    }
}

/// The file a built page's URL names, when it is under the folder.
fn file_of_url(folder: &Path, url_base: &str, url: &str) -> Option<PathBuf> {
    let url = url.split(['?', '#']).next().unwrap_or(url);
    if url.contains("..") || url.contains('\\') {
        return None;
    }
    let rel = match url.strip_prefix(url_base.trim_end_matches('/')) {
        Some(r) if url.starts_with('/') || url_base.contains("://") => r.trim_start_matches('/'),
        _ if url.starts_with("./") => &url[2..],
        _ if !url.starts_with('/') && !url.contains("://") => url,
        _ => return None,
    };
    let file = paths::manifest_file(folder, rel)?;
    file.is_file().then_some(file)
}

/// The URLs a built page loads as entries: module and classic scripts,
/// stylesheets and module preloads.
pub fn html_entries(html: &str) -> Vec<String> {
    use lol_html::{element, rewrite_str, RewriteStrSettings};
    use std::cell::RefCell;
    let found = RefCell::new(Vec::new());
    let settings = RewriteStrSettings::new()
        .append_element_content_handler(element!("script[src]", |el| {
            if let Some(src) = el.get_attribute("src") {
                found.borrow_mut().push(src);
            }
            Ok(())
        }))
        .append_element_content_handler(element!(
            "link[rel~=stylesheet][href], link[rel~=modulepreload][href]",
            |el| {
                if let Some(href) = el.get_attribute("href") {
                    found.borrow_mut().push(href);
                }
                Ok(())
            }
        ));
    // A page lol_html cannot read has no entries to pair; the files are
    // still uploaded.
    let _ = rewrite_str(html, settings);
    found.into_inner()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn build(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        dir
    }

    #[test]
    fn a_vite_manifest_gives_entries_and_their_css() {
        let dir = build(&[
            (
                ".vite/manifest.json",
                r#"{"index.html":{"file":"assets/index-BuR3Dq2X.js","name":"index","src":"index.html","isEntry":true,"css":["assets/index-D8xk2Qz1.css"]},
                   "_vendor-C1a2B3c4.js":{"file":"assets/vendor-C1a2B3c4.js","name":"vendor"}}"#,
            ),
            ("assets/index-BuR3Dq2X.js", "x"),
            ("assets/index-D8xk2Qz1.css", "x"),
            ("assets/vendor-C1a2B3c4.js", "x"),
            (
                "index.html",
                "<script type=module src=/assets/index-BuR3Dq2X.js></script>",
            ),
        ]);
        let e = entries(dir.path(), "/");
        let got: Vec<&String> = e.patterns.values().collect();
        assert_eq!(
            got,
            ["/assets/index-[hash:8].js", "/assets/index-[hash:8].css"]
        );
        assert_eq!(e.source.as_deref(), Some(".vite/manifest.json"));
        assert!(is_build_metadata(
            dir.path(),
            &dir.path().join(".vite/manifest.json")
        ));
        assert!(is_build_metadata(
            dir.path(),
            &dir.path().join("index.html")
        ));
        assert!(!is_build_metadata(
            dir.path(),
            &dir.path().join("assets/index-BuR3Dq2X.js")
        ));
    }

    #[test]
    fn a_webpack_manifest_and_a_built_page_give_entries() {
        let dir = build(&[
            (
                "asset-manifest.json",
                r#"{"files":{"main.js":"/static/js/main.3f2a1b9c.js","main.css":"/static/css/main.77aa00ff.css","static/js/453.1a2b3c4d.chunk.js":"/static/js/453.1a2b3c4d.chunk.js"}}"#,
            ),
            ("static/js/main.3f2a1b9c.js", "x"),
            ("static/css/main.77aa00ff.css", "x"),
            ("static/js/453.1a2b3c4d.chunk.js", "x"),
        ]);
        let e = entries(dir.path(), "/");
        assert!(
            e.patterns
                .values()
                .any(|p| p == "/static/js/main.[hash:8].js"),
            "{e:?}"
        );
        assert!(
            e.patterns
                .values()
                .any(|p| p == "/static/css/main.[hash:8].css"),
            "{e:?}"
        );

        let dir = build(&[
            (
                "index.html",
                "<link rel=stylesheet href=\"./app-1a2b3c4d.css\"><script type=module src=\"/app/main-9Z8y7X6w.js?v=1\"></script><script src=https://cdn.example/x.js></script>",
            ),
            ("app-1a2b3c4d.css", "x"),
            ("main-9Z8y7X6w.js", "x"),
        ]);
        let e = entries(dir.path(), "/app");
        let got: Vec<&String> = e.patterns.values().collect();
        assert_eq!(got, ["/app/app-[hash:8].css", "/app/main-[hash:8].js"]);
    }

    #[test]
    fn a_manifest_written_on_windows_names_its_files_with_backslashes() {
        let dir = build(&[
            (
                ".vite/manifest.json",
                r#"{"index.html":{"file":"assets\\index-BuR3Dq2X.js","name":"index","isEntry":true,"css":["assets\\index-D8xk2Qz1.css"]},
                   "evil.html":{"file":"..\\..\\outside-1a2b3c4d.js","name":"outside","isEntry":true},
                   "drive.html":{"file":"C:\\Windows\\x-1a2b3c4d.js","name":"x","isEntry":true}}"#,
            ),
            ("assets/index-BuR3Dq2X.js", "x"),
            ("assets/index-D8xk2Qz1.css", "x"),
        ]);
        let e = entries(dir.path(), "/");
        let got: Vec<&String> = e.patterns.values().collect();
        assert_eq!(
            got,
            ["/assets/index-[hash:8].js", "/assets/index-[hash:8].css"]
        );
        assert!(e
            .patterns
            .keys()
            .all(|f| f.starts_with(dir.path()) && !f.to_string_lossy().contains('\\')));
    }

    #[test]
    fn entries_that_share_a_pattern_are_not_paired() {
        let dir = build(&[
            (
                ".vite/manifest.json",
                r#"{"a/index.html":{"file":"assets/index-BuR3Dq2X.js","name":"index","isEntry":true},
                   "b/index.html":{"file":"assets/index-Cq9xZ1aa.js","name":"index","isEntry":true}}"#,
            ),
            ("assets/index-BuR3Dq2X.js", "x"),
            ("assets/index-Cq9xZ1aa.js", "x"),
        ]);
        assert!(entries(dir.path(), "/").patterns.is_empty());
    }

    #[test]
    fn hostile_manifests_name_nothing_outside_the_folder() {
        let dir = build(&[
            (
                "manifest.json",
                r#"{"main.js":"/../../etc/passwd","x.js":"https://evil.example/x-1a2b3c4d.js","y":3}"#,
            ),
            (
                "index.html",
                "<script src=\"../outside-1a2b3c4d.js\"></script>",
            ),
        ]);
        assert!(entries(dir.path(), "/").patterns.is_empty());
        assert!(entries(dir.path(), "/").source.is_none());
    }
}
