//! What a ticket changes, for the reviewer: each module of one stage against
//! what production serves now (fetched through the proxy without a
//! selection, so exactly what a visitor gets, released tickets included), or
//! against another stage of the same ticket ("what QA has not seen yet").
//!
//! Text modules get a unified line diff (the `similar` crate). JSON is
//! compared pretty-printed, and minified JavaScript or CSS (lines longer
//! than [`LONG_LINE`]) is broken after `;`, `{` and `}` first, so a one-line
//! bundle still diffs by statement. Binaries, and bodies past
//! [`MAX_DIFF_BYTES`], are compared by size and hash only.

use serde::Serialize;
use similar::{ChangeTag, TextDiff};

/// Largest body diffed line by line.
pub const MAX_DIFF_BYTES: usize = 1 << 20;
/// Largest diff text returned for one module.
pub const MAX_DIFF_TEXT: usize = 256 * 1024;
/// A text whose lines average more than this is treated as minified.
pub const LONG_LINE: usize = 400;
/// How long one module's line diff may search for the smallest diff; past
/// it `similar` settles for a larger, still correct one (two 1 MiB bodies
/// with nothing in common would otherwise take minutes of CPU).
pub const DIFF_DEADLINE: std::time::Duration = std::time::Duration::from_millis(300);

/// One side of a comparison.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Side {
    pub size: u64,
    /// The body's sha256 (hex).
    pub hash: String,
}

/// One module compared.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ModuleDiff {
    pub specifier: String,
    pub path: String,
    /// `changed`, `unchanged`, `added` (nothing before), `removed` (in the
    /// other stage only), `unreachable` (production could not be read).
    pub status: &'static str,
    pub before: Option<Side>,
    pub after: Option<Side>,
    /// `text`, `json`, `minified`, `binary`, or `too-large`.
    pub kind: &'static str,
    pub added_lines: usize,
    pub removed_lines: usize,
    /// The unified diff, for text kinds.
    pub diff: Option<String>,
    pub note: Option<String>,
}

/// Whether a path names a text type worth a line diff.
pub fn is_text(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    matches!(
        ext.as_deref(),
        Some(
            "js" | "mjs"
                | "cjs"
                | "jsx"
                | "ts"
                | "tsx"
                | "css"
                | "json"
                | "map"
                | "html"
                | "htm"
                | "svg"
                | "txt"
                | "md"
                | "xml"
                | "webmanifest"
        )
    )
}

fn side(body: &[u8]) -> Side {
    Side {
        size: body.len() as u64,
        hash: stamp_model::ticket::Hash::of(body).to_string(),
    }
}

/// Minified code broken into statement-sized lines (for display only).
fn break_minified(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 20);
    for c in text.chars() {
        out.push(c);
        if matches!(c, ';' | '{' | '}') {
            out.push('\n');
        }
    }
    out
}

fn is_minified(text: &str) -> bool {
    let lines = text.lines().count().max(1);
    text.len() / lines > LONG_LINE
}

/// Compares two bodies of the module at `path`; `before` is `None` when
/// there was nothing before.
pub fn compare(
    specifier: &str,
    path: &str,
    before: Option<&[u8]>,
    after: &[u8],
    labels: (&str, &str),
) -> ModuleDiff {
    let mut d = ModuleDiff {
        specifier: specifier.to_string(),
        path: path.to_string(),
        status: match before {
            None => "added",
            Some(b) if b == after => "unchanged",
            Some(_) => "changed",
        },
        before: before.map(side),
        after: Some(side(after)),
        kind: "text",
        added_lines: 0,
        removed_lines: 0,
        diff: None,
        note: None,
    };
    let old = before.unwrap_or_default();
    let texts = (std::str::from_utf8(old), std::str::from_utf8(after));
    let (Ok(old_text), Ok(new_text), true) = (texts.0, texts.1, is_text(path)) else {
        d.kind = "binary";
        return d;
    };
    if old.len() > MAX_DIFF_BYTES || after.len() > MAX_DIFF_BYTES {
        d.kind = "too-large";
        d.note = Some(format!(
            "larger than {MAX_DIFF_BYTES} bytes: compared by size and hash only"
        ));
        return d;
    }
    if d.status == "unchanged" {
        return d;
    }
    let lower = path.to_ascii_lowercase();
    let (old_view, new_view) = if lower.ends_with(".json") || lower.ends_with(".map") {
        let pretty = |t: &str| {
            serde_json::from_str::<serde_json::Value>(t)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
        };
        match (pretty(old_text), pretty(new_text)) {
            (Some(a), Some(b)) => {
                d.kind = "json";
                (a + "\n", b + "\n")
            }
            _ => (old_text.to_string(), new_text.to_string()),
        }
    } else if is_minified(old_text) || is_minified(new_text) {
        d.kind = "minified";
        d.note = Some("minified: broken after ; { } for the diff".into());
        (break_minified(old_text), break_minified(new_text))
    } else {
        (old_text.to_string(), new_text.to_string())
    };
    let diff = TextDiff::configure()
        .timeout(DIFF_DEADLINE)
        .diff_lines(&old_view, &new_view);
    for change in diff.iter_all_changes() {
        match change.tag() {
            ChangeTag::Insert => d.added_lines += 1,
            ChangeTag::Delete => d.removed_lines += 1,
            ChangeTag::Equal => {}
        }
    }
    let mut text = diff
        .unified_diff()
        .context_radius(3)
        .header(labels.0, labels.1)
        .to_string();
    if text.len() > MAX_DIFF_TEXT {
        let mut cut = MAX_DIFF_TEXT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        d.note = Some(format!("the diff is cut after {MAX_DIFF_TEXT} bytes"));
    }
    d.diff = Some(text);
    d
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn text_modules_get_a_unified_diff() {
        let d = compare(
            "/src/a.js",
            "/src/a.js",
            Some(b"const a = 1;\nconst b = 2;\n"),
            b"const a = 1;\nconst b = 3;\n",
            ("production", "TKT-1 qa"),
        );
        assert_eq!((d.status, d.kind), ("changed", "text"));
        assert_eq!((d.added_lines, d.removed_lines), (1, 1));
        let text = d.diff.unwrap();
        assert!(text.starts_with("--- production\n+++ TKT-1 qa\n"), "{text}");
        assert!(text.contains("-const b = 2;\n+const b = 3;\n"), "{text}");
    }

    #[test]
    fn json_and_minified_code_diff_by_structure() {
        let d = compare(
            "cfg",
            "/cfg.json",
            Some(br#"{"a":1,"b":[1,2]}"#),
            br#"{"a":1,"b":[1,3]}"#,
            ("a", "b"),
        );
        assert_eq!(d.kind, "json");
        assert_eq!((d.added_lines, d.removed_lines), (1, 1));
        assert!(d.diff.unwrap().contains("-    2\n+    3\n"));
        let long = |x: &str| format!("function f(){{{}return {x};}}", "a();".repeat(200));
        let d = compare(
            "m",
            "/m.js",
            Some(long("1").as_bytes()),
            long("2").as_bytes(),
            ("a", "b"),
        );
        assert_eq!(d.kind, "minified");
        assert_eq!((d.added_lines, d.removed_lines), (1, 1), "{:?}", d.diff);
        assert!(d.diff.unwrap().contains("+return 2;\n"));
    }

    #[test]
    fn binaries_new_files_and_giants_are_summed_up() {
        let png = [0x89, b'P', b'N', b'G', 0, 1, 2];
        let d = compare("logo", "/logo.png", Some(&png), &png[..6], ("a", "b"));
        assert_eq!(
            (d.status, d.kind, d.diff.as_deref()),
            ("changed", "binary", None)
        );
        assert_eq!(d.before.unwrap().size, 7);
        let d = compare("x", "/x.js", Some(&[0xff, 0xfe]), b"ok", ("a", "b"));
        assert_eq!(d.kind, "binary", "not UTF-8");
        let d = compare("n", "/n.js", None, b"export const n = 1;\n", ("a", "b"));
        assert_eq!((d.status, d.added_lines), ("added", 1));
        assert!(d.before.is_none());
        let big = "x\n".repeat(MAX_DIFF_BYTES);
        let d = compare("b", "/b.js", Some(b"y\n"), big.as_bytes(), ("a", "b"));
        assert_eq!((d.kind, d.diff.as_deref()), ("too-large", None));
        let same = compare("s", "/s.js", Some(b"a\n"), b"a\n", ("a", "b"));
        assert_eq!((same.status, same.diff.as_deref()), ("unchanged", None));
    }

    #[test]
    fn a_huge_diff_is_bounded_in_time_and_cut_on_a_char_boundary() {
        let old: String = (0..40_000).map(|i| format!("é{i}\n")).collect();
        let new: String = (0..40_000).map(|i| format!("ü{i}\n")).collect();
        let start = std::time::Instant::now();
        let d = compare(
            "h",
            "/h.js",
            Some(old.as_bytes()),
            new.as_bytes(),
            ("a", "b"),
        );
        // The deadline plus building the text: far from the minutes an
        // unbounded search takes on two bodies with nothing in common.
        let took = start.elapsed();
        assert!(took < std::time::Duration::from_secs(20), "{took:?}");
        assert_eq!((d.added_lines, d.removed_lines), (40_000, 40_000));
        assert!(d.diff.unwrap().len() <= MAX_DIFF_TEXT);
        assert!(d.note.unwrap().contains("cut"));
    }
}
