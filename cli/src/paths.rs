//! File paths → URL paths, and path strings from settings, the same on
//! every OS.
//!
//! A module's URL path is made from path *components* (never from a string
//! with the platform's separator), by [`url_of`] alone. Windows roots
//! (`C:\`, `\\?\C:\`, `\\server\share\`) are compared as Windows compares
//! them: drive letters and UNC server and share names without regard to
//! case. On Windows and macOS, whose default filesystems ignore case, the
//! watched folder's own names are matched without regard to case too
//! ([`FOLD_CASE`]); the part of the path below the folder keeps the case it
//! has on disk, since URLs are case-sensitive.
//!
//! `std::path::Path` splits on `\` only when compiled for Windows, so the
//! Windows rules are also written as string functions ([`Parts::parse`],
//! [`simplify_verbatim`]) that the tests feed Windows-shaped paths on any
//! OS, and that read path strings from settings and manifests, where a
//! Windows user writes `dist\assets`.

use std::path::{Component, Path, PathBuf, Prefix};

/// Whether names are matched without regard to case: the default
/// filesystems of Windows (NTFS) and macOS (APFS) ignore case.
pub const FOLD_CASE: bool = cfg!(any(windows, target_os = "macos"));

/// Where a path starts, normalised so equal roots compare equal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    /// None: a relative path.
    Relative,
    /// `/` (or `\` alone on Windows: the current drive's root).
    Slash,
    /// `C:\`, `\\?\C:\` or `\\.\C:\` (the letter upper-cased).
    Drive(char),
    /// `C:` with no separator after it: relative to that drive's current folder.
    DriveRelative(char),
    /// `\\server\share\` or `\\?\UNC\server\share\` (lower-cased).
    Unc(String, String),
    /// Another device or verbatim prefix (`\\.\pipe`, `\\?\Volume{…}`).
    Device(String),
}

/// A path as its root and its names (`.` and `..` kept as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    pub root: Root,
    pub names: Vec<String>,
}

impl Parts {
    /// The components of an OS path; `None` when a name is not UTF-8
    /// (no URL path can be made of it).
    pub fn of(path: &Path) -> Option<Parts> {
        let mut root = Root::Relative;
        let mut names = Vec::new();
        for c in path.components() {
            match c {
                Component::Prefix(p) => {
                    root = match p.kind() {
                        Prefix::Disk(d) => Root::DriveRelative(drive(d)),
                        Prefix::VerbatimDisk(d) => Root::Drive(drive(d)),
                        Prefix::UNC(server, share) | Prefix::VerbatimUNC(server, share) => {
                            Root::Unc(lower(server.to_str()?), lower(share.to_str()?))
                        }
                        Prefix::DeviceNS(s) if is_drive(s.to_str()?) && s.len() == 2 => {
                            Root::Drive(drive(s.as_encoded_bytes()[0]))
                        }
                        Prefix::Verbatim(s) | Prefix::DeviceNS(s) => {
                            Root::Device(lower(s.to_str()?))
                        }
                    }
                }
                Component::RootDir => {
                    root = match root {
                        Root::Relative => Root::Slash,
                        Root::DriveRelative(d) => Root::Drive(d),
                        other => other,
                    }
                }
                Component::CurDir => names.push(".".into()),
                Component::ParentDir => names.push("..".into()),
                Component::Normal(n) => names.push(n.to_str()?.to_string()),
            }
        }
        Some(Parts { root, names })
    }

    /// A path string read the way Windows reads it, on every OS: `\` and
    /// `/` both separate (except after `\\?\`, where only `\` does), with
    /// drive letters, `\\server\share` and `\\?\` / `\\.\` prefixes. For
    /// settings, manifests and Windows-shaped test inputs.
    pub fn parse(text: &str) -> Parts {
        let sep = |c: char| c == '\\' || c == '/';
        let names = |rest: &str, seps: &dyn Fn(char) -> bool| -> Vec<String> {
            rest.split(seps)
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect()
        };
        let b = text.as_bytes();
        let verbatim = text.starts_with(r"\\?\");
        let device = !verbatim && b.len() >= 4 && sep(b[0] as char) && sep(b[1] as char) && {
            let c = b[2];
            (c == b'.' || c == b'?') && sep(b[3] as char)
        };
        if verbatim || device {
            let rest = &text[4..];
            let seps: &dyn Fn(char) -> bool = if verbatim { &|c| c == '\\' } else { &sep };
            let mut all = rest.split(seps);
            let first = all.next().unwrap_or("");
            let tail: String = rest[first.len()..].to_string();
            if is_drive(first) && first.len() == 2 {
                let d = drive(first.as_bytes()[0]);
                return Parts {
                    root: Root::Drive(d),
                    names: names(&tail, seps),
                };
            }
            if first.eq_ignore_ascii_case("UNC") {
                let mut n = names(&tail, seps);
                if n.len() >= 2 {
                    let server = lower(&n.remove(0));
                    let share = lower(&n.remove(0));
                    return Parts {
                        root: Root::Unc(server, share),
                        names: n,
                    };
                }
            }
            return Parts {
                root: Root::Device(lower(first)),
                names: names(&tail, seps),
            };
        }
        if b.len() >= 2 && sep(b[0] as char) && sep(b[1] as char) {
            let mut n = names(&text[2..], &sep);
            if n.len() >= 2 {
                let server = lower(&n.remove(0));
                let share = lower(&n.remove(0));
                return Parts {
                    root: Root::Unc(server, share),
                    names: n,
                };
            }
            return Parts {
                root: Root::Slash,
                names: n,
            };
        }
        if is_drive(text) {
            let d = drive(b[0]);
            let rest = &text[2..];
            let root = if rest.starts_with(sep) {
                Root::Drive(d)
            } else {
                Root::DriveRelative(d)
            };
            return Parts {
                root,
                names: names(rest, &sep),
            };
        }
        Parts {
            root: if text.starts_with(sep) {
                Root::Slash
            } else {
                Root::Relative
            },
            names: names(text, &sep),
        }
    }
}

fn is_drive(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':'
}

fn drive(letter: u8) -> char {
    (letter as char).to_ascii_uppercase()
}

fn lower(s: &str) -> String {
    s.to_lowercase()
}

fn same_name(a: &str, b: &str, fold_case: bool) -> bool {
    a == b || (fold_case && a.to_lowercase() == b.to_lowercase())
}

/// The names of `file` below `root` (both absolute, `.` and `..` resolved),
/// or `None` when it is not below it. Roots compare as Windows compares
/// them; the root's names without regard to case when `fold_case`.
pub fn names_below<'a>(root: &Parts, file: &'a Parts, fold_case: bool) -> Option<&'a [String]> {
    if root.root != file.root || root.names.len() > file.names.len() {
        return None;
    }
    let lexical = |n: &String| n == "." || n == "..";
    if root.names.iter().chain(&file.names).any(lexical) {
        return None;
    }
    root.names
        .iter()
        .zip(&file.names)
        .all(|(a, b)| same_name(a, b, fold_case))
        .then(|| &file.names[root.names.len()..])
}

/// Why a name cannot be part of a URL path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadName {
    #[error("`{0}` has a backslash in its name (a URL would read it as a separator)")]
    Backslash(String),
    #[error("`{0}` has a control character in its name")]
    Control(String),
    #[error("`{0}` is not a file name")]
    Lexical(String),
}

/// `base` + the names, `/`-separated: the one way a URL path is made of a
/// path. A name with `\`, `/` or a control character, or a `.` or `..`,
/// is refused, so no URL path ever has a `\` (nor a `%5C` once encoded).
pub fn url_path(base: &str, names: &[String]) -> Result<String, BadName> {
    for n in names {
        if n.is_empty() || n == "." || n == ".." || n.contains('/') {
            return Err(BadName::Lexical(n.clone()));
        }
        if n.contains('\\') {
            return Err(BadName::Backslash(n.clone()));
        }
        if n.chars().any(char::is_control) {
            return Err(BadName::Control(n.clone()));
        }
    }
    Ok(join_url(base, &names.join("/")))
}

/// The URL path of `file` (absolute) when `root` (absolute) is served at
/// `base`: `None` when it is not below the root or a name cannot be in a
/// URL. Matches the root without regard to case where the OS does.
pub fn url_of(root: &Path, file: &Path, base: &str) -> Option<String> {
    url_of_parts(&Parts::of(root)?, &Parts::of(file)?, base, FOLD_CASE).ok()
}

/// [`url_of`] for parts, with the case rule given (tested with Windows
/// paths on every OS).
pub fn url_of_parts(
    root: &Parts,
    file: &Parts,
    base: &str,
    fold_case: bool,
) -> Result<String, Option<BadName>> {
    let rest = names_below(root, file, fold_case).ok_or(None)?;
    url_path(base, rest).map_err(Some)
}

/// Whether `file` is `root` or below it (absolute paths), by the same rules
/// as [`url_of`].
pub fn is_within(root: &Path, file: &Path) -> bool {
    match (Parts::of(root), Parts::of(file)) {
        (Some(r), Some(f)) => names_below(&r, &f, FOLD_CASE).is_some(),
        _ => file.starts_with(root),
    }
}

/// `rel` below `root` as `/`-separated names (`lib/a.js`), for messages and
/// matching; `None` when it is not below it.
pub fn relative_slash(root: &Path, file: &Path) -> Option<String> {
    let (r, f) = (Parts::of(root)?, Parts::of(file)?);
    names_below(&r, &f, FOLD_CASE).map(|n| n.join("/"))
}

/// A relative path written in a setting (`folder`, a specifier's file):
/// `/` or `\` separate. A drive letter, `\\server\share`, a `\\?\` prefix
/// or a leading separator is refused: stamp.toml and package.json are
/// shared, and such a path names a place on one machine only. `..` is
/// kept (a monorepo's output may sit above the settings file).
pub fn relative_setting(raw: &str) -> Result<Vec<String>, String> {
    let t = raw.trim();
    if t.is_empty() {
        return Err("is empty".into());
    }
    let p = Parts::parse(t);
    match p.root {
        Root::Relative => {}
        Root::Slash => return Err(
            "must be relative to the settings file's folder, not start with `/` or `\\` (pass --folder for a folder elsewhere on this machine)".into(),
        ),
        Root::Drive(_) | Root::DriveRelative(_) => return Err(
            "must be relative to the settings file's folder, not name a drive (pass --folder for a folder elsewhere on this machine)".into(),
        ),
        Root::Unc(..) | Root::Device(_) => return Err(
            "must be relative to the settings file's folder, not a network share or device path (pass --folder for one)".into(),
        ),
    }
    if let Some(bad) = p.names.iter().find(|n| n.chars().any(char::is_control)) {
        return Err(format!("has a control character in `{bad}`"));
    }
    Ok(p.names.into_iter().filter(|n| n != ".").collect())
}

/// A file a build's manifest names, relative to the build folder
/// (`assets/index-….js`; `\` accepted): `None` for anything that is not
/// below the folder (absolute, a drive, a share, a `..` that climbs out).
pub fn manifest_file(folder: &Path, raw: &str) -> Option<PathBuf> {
    let p = Parts::parse(raw.trim());
    if p.root != Root::Relative {
        return None;
    }
    let mut names: Vec<&str> = Vec::new();
    for n in &p.names {
        match n.as_str() {
            "." => {}
            ".." => {
                names.pop()?;
            }
            n => names.push(n),
        }
    }
    (!names.is_empty()).then(|| join_names(folder, names))
}

/// `base` with each name pushed as a component of its own (so a `\\?\`
/// base, where Windows takes `/` literally, still gets separators).
pub fn join_names<S: AsRef<str>>(base: &Path, names: impl IntoIterator<Item = S>) -> PathBuf {
    let mut out = base.to_path_buf();
    for n in names {
        out.push(n.as_ref());
    }
    out
}

/// `base` joined with a `/`-separated relative path written in this
/// program (`.vite/manifest.json`), component by component.
pub fn join_slash(base: &Path, rel: &str) -> PathBuf {
    join_names(base, rel.split('/').filter(|n| !n.is_empty()))
}

/// `\\?\C:\work\shop` → `C:\work\shop`, and `\\?\UNC\server\share\x` →
/// `\\server\share\x`, when the plain form means the same file (what
/// `canonicalize` returns on Windows is verbatim; messages and tools read
/// the plain form better, and `/` joins only work on it). `None` when the
/// path is not verbatim or must stay so: longer than `MAX_PATH`, a name
/// Windows would rewrite (trailing `.` or space, `CON`, `NUL`, …) or a
/// character the plain form refuses.
pub fn simplify_verbatim(path: &str) -> Option<String> {
    let rest = path.strip_prefix(r"\\?\")?;
    let plain = if let Some(unc) = rest
        .strip_prefix("UNC\\")
        .or_else(|| rest.strip_prefix("unc\\"))
    {
        format!(r"\\{unc}")
    } else if is_drive(rest) && rest.as_bytes().get(2) == Some(&b'\\') {
        rest.to_string()
    } else {
        return None;
    };
    if plain.len() >= 260 {
        return None;
    }
    let names_from = if plain.starts_with(r"\\") { 2 } else { 3 };
    for name in plain[names_from..].split('\\') {
        let stem = name.split('.').next().unwrap_or("").trim_end();
        let reserved = ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
            .iter()
            .any(|r| stem.eq_ignore_ascii_case(r))
            || (stem.len() == 4
                && stem.is_ascii()
                && ["COM", "LPT"]
                    .iter()
                    .any(|p| stem[..3].eq_ignore_ascii_case(p))
                && stem.as_bytes()[3].is_ascii_digit()
                && stem.as_bytes()[3] != b'0');
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.ends_with('.')
            || name.ends_with(' ')
            || reserved
            || name
                .chars()
                .any(|c| c.is_control() || "<>:\"/|?*".contains(c))
        {
            return None;
        }
    }
    Some(plain)
}

/// `canonicalize`'s answer in the form people read and type: on Windows
/// without the `\\?\` prefix where that means the same file (see
/// [`simplify_verbatim`]); elsewhere as it is.
pub fn tidy(path: PathBuf) -> PathBuf {
    match path.to_str().and_then(simplify_verbatim) {
        Some(plain) => PathBuf::from(plain),
        None => path,
    }
}

/// `base` + `/` + `rest`, for URL paths (`/` + `a.js` = `/a.js`).
pub fn join_url(base: &str, rest: &str) -> String {
    let b = base.trim_end_matches('/');
    match (b.is_empty(), rest.is_empty()) {
        (_, true) => {
            if b.is_empty() {
                "/".into()
            } else {
                b.into()
            }
        }
        (true, false) => format!("/{rest}"),
        (false, false) => format!("{b}/{rest}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn win_url(root: &str, file: &str, base: &str) -> Result<String, Option<BadName>> {
        url_of_parts(&Parts::parse(root), &Parts::parse(file), base, true)
    }

    #[test]
    fn windows_paths_become_url_paths_by_their_components() {
        let ok = |root: &str, file: &str, base: &str| win_url(root, file, base).unwrap();
        assert_eq!(
            ok(r"C:\work\shop\src", r"C:\work\shop\src\app.js", "/src"),
            "/src/app.js"
        );
        assert_eq!(
            ok(r"C:\work\shop\src", r"C:\work\shop\src\lib\deep\a.js", "/"),
            "/lib/deep/a.js"
        );
        // What canonicalize returns (verbatim) against what was typed, and
        // the drive letter's case, do not matter.
        assert_eq!(
            ok(
                r"\\?\C:\work\shop\src",
                r"c:\work\shop\src\lib\a.js",
                "/src"
            ),
            "/src/lib/a.js"
        );
        assert_eq!(
            ok(r"c:/work/shop/src", r"\\?\C:\work\shop\src\a.js", "/src"),
            "/src/a.js"
        );
        // Shares, plain and verbatim, and their names' case.
        assert_eq!(
            ok(
                r"\\Server\Share\shop\dist",
                r"\\?\UNC\server\share\shop\dist\assets\index-1a2b3c4d.js",
                "/"
            ),
            "/assets/index-1a2b3c4d.js"
        );
        // The folder's own names match without regard to case (Windows and
        // macOS); the names below it keep their case in the URL.
        assert_eq!(
            ok(r"C:\Work\Shop\Src", r"C:\work\shop\src\App.js", "/src"),
            "/src/App.js"
        );
        assert_eq!(
            url_of_parts(
                &Parts::parse(r"C:\Work\Shop\Src"),
                &Parts::parse(r"C:\work\shop\src\App.js"),
                "/src",
                false
            ),
            Err(None)
        );
        // A URL root, and a CDN base.
        assert_eq!(ok(r"D:\site", r"D:\site", "/static"), "/static");
        assert_eq!(
            ok(r"D:\site", r"D:\site\w\i.js", "https://cdn.example/lib"),
            "https://cdn.example/lib/w/i.js"
        );
    }

    #[test]
    fn paths_outside_the_folder_or_on_another_root_have_no_url() {
        for (root, file) in [
            (r"C:\work\shop\src", r"D:\work\shop\src\app.js"),
            (r"C:\work\shop\src", r"C:\work\shop\srcx\app.js"),
            (r"C:\work\shop\src", r"C:\work\shop\app.js"),
            (r"C:\work\shop\src", r"C:\work\shop\src\..\secret.js"),
            (r"C:\work\shop\src", r"\\server\share\work\shop\src\a.js"),
            (r"C:\work\shop\src", r"work\shop\src\a.js"),
            (r"\\a\b\src", r"\\a\c\src\x.js"),
        ] {
            assert_eq!(win_url(root, file, "/src"), Err(None), "{file}");
        }
    }

    #[test]
    fn no_url_path_ever_has_a_backslash() {
        // On Linux `\` is a legal character of a name: such a file has no URL.
        let root = Path::new("/r/src");
        assert_eq!(url_of(root, Path::new("/r/src/a\\b.js"), "/src"), None);
        assert_eq!(
            url_path("/src", &["a\\b.js".into()]),
            Err(BadName::Backslash("a\\b.js".into()))
        );
        assert!(url_path("/src", &["..".into()]).is_err());
        assert!(url_path("/src", &["a\nb.js".into()]).is_err());
        assert_eq!(
            url_of(root, Path::new("/r/src/lib/a b.js"), "/src").as_deref(),
            Some("/src/lib/a b.js")
        );
        // Whatever the input shape, the result has only `/`.
        for file in [
            r"C:\r\src\x\y.js",
            r"C:/r/src/x/y.js",
            r"C:\r\src/x\y.js",
            r"\\?\C:\r\src\x\y.js",
        ] {
            let u = win_url(r"C:\r\src", file, "/src").unwrap();
            assert_eq!(u, "/src/x/y.js", "{file}");
            let encoded = crate::client::encode_path(&u);
            assert!(!u.contains('\\') && !encoded.to_ascii_uppercase().contains("%5C"));
        }
    }

    #[test]
    fn unix_paths_use_the_same_function() {
        let root = Path::new("/home/me/shop/src");
        assert_eq!(
            url_of(root, Path::new("/home/me/shop/src/lib/a.js"), "/src").as_deref(),
            Some("/src/lib/a.js")
        );
        assert_eq!(
            url_of(root, Path::new("/home/me/shop/other/a.js"), "/src"),
            None
        );
        assert!(is_within(root, root));
        assert!(is_within(root, Path::new("/home/me/shop/src/x")));
        assert!(!is_within(root, Path::new("/home/me/shop/srcx")));
        assert_eq!(
            relative_slash(Path::new("/r"), Path::new("/r/web/js")).as_deref(),
            Some("web/js")
        );
    }

    #[test]
    fn windows_strings_parse_into_roots_and_names() {
        let p = |s: &str| Parts::parse(s);
        assert_eq!(p(r"C:\a\b").root, Root::Drive('C'));
        assert_eq!(p(r"c:a\b").root, Root::DriveRelative('C'));
        assert_eq!(p(r"\\?\c:\a").root, Root::Drive('C'));
        assert_eq!(p(r"\\.\C:\a").root, Root::Drive('C'));
        assert_eq!(
            p(r"\\srv\Share\a\b"),
            Parts {
                root: Root::Unc("srv".into(), "share".into()),
                names: vec!["a".into(), "b".into()]
            }
        );
        assert_eq!(
            p(r"\\?\UNC\srv\share\a").root,
            Root::Unc("srv".into(), "share".into())
        );
        assert_eq!(p(r"\\.\pipe\x").root, Root::Device("pipe".into()));
        assert_eq!(p(r"\a").root, Root::Slash);
        assert_eq!(p("/a").root, Root::Slash);
        assert_eq!(
            p(r"dist\assets/x.js"),
            Parts {
                root: Root::Relative,
                names: vec!["dist".into(), "assets".into(), "x.js".into()]
            }
        );
        // After \\?\ only `\` separates: `/` is part of a name.
        assert_eq!(p(r"\\?\C:\a/b").names, ["a/b"]);
    }

    #[test]
    fn settings_take_relative_paths_with_either_separator() {
        assert_eq!(
            relative_setting(r"dist\assets").unwrap(),
            ["dist", "assets"]
        );
        assert_eq!(relative_setting("./web/js/").unwrap(), ["web", "js"]);
        assert_eq!(
            relative_setting(r"..\..\dist\apps\shop").unwrap(),
            ["..", "..", "dist", "apps", "shop"]
        );
        for (bad, needle) in [
            (r"C:\work\dist", "drive"),
            ("C:dist", "drive"),
            (r"\\server\share\dist", "network share"),
            (r"\\?\C:\dist", "drive"),
            ("/abs/dist", "not start with"),
            (r"\dist", "not start with"),
            ("  ", "empty"),
        ] {
            let e = relative_setting(bad).unwrap_err();
            assert!(e.contains(needle), "{bad}: {e}");
        }
    }

    #[test]
    fn manifest_files_stay_in_the_build_folder() {
        let folder = Path::new("/r/dist");
        assert_eq!(
            manifest_file(folder, r"assets\index-1a2b3c4d.js"),
            Some(PathBuf::from("/r/dist/assets/index-1a2b3c4d.js"))
        );
        assert_eq!(
            manifest_file(folder, "./assets/../x.js"),
            Some(PathBuf::from("/r/dist/x.js"))
        );
        for bad in [
            "../secret.js",
            r"assets\..\..\secret.js",
            "/etc/passwd",
            r"C:\Windows\x.js",
            r"\\evil\share\x.js",
            "",
            ".",
        ] {
            assert_eq!(manifest_file(folder, bad), None, "{bad}");
        }
    }

    #[test]
    fn verbatim_paths_lose_their_prefix_only_when_it_means_the_same_file() {
        assert_eq!(
            simplify_verbatim(r"\\?\C:\work\shop\src").as_deref(),
            Some(r"C:\work\shop\src")
        );
        assert_eq!(
            simplify_verbatim(r"\\?\UNC\server\share\shop").as_deref(),
            Some(r"\\server\share\shop")
        );
        let long = format!(r"\\?\C:\{}", "a".repeat(300));
        for keep in [
            r"C:\work",
            "/home/me/src",
            r"\\?\C:\work\con.js",
            r"\\?\C:\work\LPT1",
            r"\\?\C:\work\trailing.",
            r"\\?\C:\work\a/b",
            r"\\?\Volume{0000}\x",
            long.as_str(),
        ] {
            assert_eq!(simplify_verbatim(keep), None, "{keep}");
        }
        assert_eq!(
            simplify_verbatim(r"\\?\C:\work\console.js").as_deref(),
            Some(r"C:\work\console.js")
        );
        assert_eq!(tidy(PathBuf::from("/a/b")), PathBuf::from("/a/b"));
    }

    #[test]
    fn names_are_joined_one_component_at_a_time() {
        assert_eq!(
            join_slash(Path::new("/r/dist"), ".vite/manifest.json"),
            PathBuf::from("/r/dist/.vite/manifest.json")
        );
        assert_eq!(
            join_names(Path::new("/r"), ["a", "b.js"]),
            PathBuf::from("/r/a/b.js")
        );
    }
}
