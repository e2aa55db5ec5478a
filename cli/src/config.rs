//! Settings: `stamp.toml` found upward from the working directory, the
//! environment and the flags, merged in one place (flag > env > file > default).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::cli::project_key_ok;
use crate::paths::join_names;

pub const FILE_NAME: &str = "stamp.toml";
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
pub const DEFAULT_FOLDER: &str = "src";

/// `stamp.toml`, as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub server: Option<String>,
    pub project: Option<String>,
    pub folder: Option<String>,
    pub url_path: Option<String>,
    pub main_branch: Option<String>,
    /// The folder is a bundler's output (default: detected).
    pub build: Option<bool>,
    /// Dev links turn live reload on.
    pub live: Option<bool>,
    #[serde(default)]
    pub specifiers: BTreeMap<String, String>,
}

const KEYS: &str = "server, project, folder, url_path, main_branch, build, live, [specifiers]";

/// A problem with the configuration (exit code 2): where, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
    pub hint: Option<String>,
}

/// Where a setting came from (shown with `-v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    File(PathBuf),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(name) => write!(f, "flag {name}"),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// The flags that take part in precedence.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub server: Option<String>,
    pub token: Option<String>,
    pub folder: Option<PathBuf>,
}

/// Every setting, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `scheme://host[:port][/prefix]`, no trailing slash.
    pub server: String,
    pub server_from: Source,
    pub token: Option<String>,
    pub token_from: Option<Source>,
    pub project: Option<String>,
    /// The folder to watch, absolute (symlinks resolved where it exists).
    pub folder: PathBuf,
    pub folder_from: Source,
    /// `url_path` from stamp.toml, with the folder it describes.
    pub url_path: Option<(PathBuf, String)>,
    pub main_branch: Option<String>,
    /// stamp.toml's `build`.
    pub build: Option<bool>,
    /// stamp.toml's `live`.
    pub live: bool,
    /// Bare specifier → absolute file path.
    pub specifiers: Vec<(String, PathBuf)>,
    pub file: Option<PathBuf>,
}

impl Settings {
    /// The URL path production serves `folder` at, when stamp.toml says so:
    /// the configured folder's `url_path`, or a sub-folder of it.
    pub fn configured_url_path(&self, folder: &Path) -> Option<String> {
        let (base, url) = self.url_path.as_ref()?;
        crate::paths::url_of(base, folder, url)
    }

    /// A short description of where each setting came from (for `-v`).
    pub fn describe(&self) -> Vec<String> {
        let mut out = vec![
            format!(
                "config file: {}",
                self.file
                    .as_ref()
                    .map_or("none found".to_string(), |p| p.display().to_string())
            ),
            format!("server {} (from {})", self.server, self.server_from),
            match &self.token_from {
                Some(s) => format!("token ******** (from {s})"),
                None => "no token".to_string(),
            },
            format!(
                "folder {} (from {})",
                self.folder.display(),
                self.folder_from
            ),
        ];
        if let Some(p) = &self.project {
            out.push(format!("project {p}"));
        }
        out
    }
}

/// The key of `package.json` that may hold the settings instead.
pub const PACKAGE_KEY: &str = "ticket-stamp";

/// The first `stamp.toml` in `dir` or above it, or a `package.json` with a
/// `"ticket-stamp"` key (in one folder, stamp.toml wins).
pub fn discover(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().find_map(|d| {
        let toml = d.join(FILE_NAME);
        if toml.is_file() {
            return Some(toml);
        }
        let package = d.join("package.json");
        let has_key = std::fs::read_to_string(&package)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v.get(PACKAGE_KEY).is_some());
        has_key.then_some(package)
    })
}

/// Reads and parses a stamp.toml, or the `"ticket-stamp"` key of a package.json.
pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        problems: vec![format!("cannot read {}: {e}", path.display())],
        hint: None,
    })?;
    if path.file_name().is_some_and(|n| n == "package.json") {
        return parse_package(&text, path);
    }
    parse(&text, path)
}

/// The settings under `"ticket-stamp"` in package.json text: the same keys
/// as stamp.toml, as JSON.
pub fn parse_package(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    let shown = path.display();
    let bad = |problem: String| ConfigError {
        problems: vec![problem],
        hint: Some(format!("the keys are: {KEYS}")),
    };
    let root: serde_json::Value =
        serde_json::from_str(text).map_err(|e| bad(format!("{shown}: not valid JSON: {e}")))?;
    let section = root
        .get(PACKAGE_KEY)
        .ok_or_else(|| bad(format!("{shown} has no \"{PACKAGE_KEY}\" key")))?;
    if !section.is_object() {
        return Err(bad(format!("{shown}: \"{PACKAGE_KEY}\" must be an object")));
    }
    if section.get("token").is_some() {
        return Err(ConfigError {
            problems: vec![format!(
                "{shown}: `token` does not belong in package.json (it is usually committed)"
            )],
            hint: Some("put the token in STAMP_TOKEN, or pass --token".into()),
        });
    }
    FileConfig::deserialize(section).map_err(|e| {
        // Name the key at fault: each one is tried on its own.
        let key = section.as_object().and_then(|o| {
            o.iter()
                .find(|(k, v)| {
                    let one = serde_json::json!({ k.as_str(): v });
                    FileConfig::deserialize(&one).is_err()
                })
                .map(|(k, _)| k.clone())
        });
        match key {
            Some(k) => bad(format!("{shown}: \"{PACKAGE_KEY}\".{k}: {e}")),
            None => bad(format!("{shown}: \"{PACKAGE_KEY}\": {e}")),
        }
    })
}

/// Parses stamp.toml text; `path` is only used in messages.
pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
    let shown = path.display();
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError {
        problems: vec![format!("{shown}: {}", e.message().trim())],
        hint: e.span().map(|s| {
            format!(
                "at line {}",
                text[..s.start.min(text.len())].lines().count().max(1)
            )
        }),
    })?;
    if table.contains_key("token") {
        return Err(ConfigError {
            problems: vec![format!(
                "{shown}: `token` does not belong in stamp.toml (it is usually committed)"
            )],
            hint: Some("put the token in STAMP_TOKEN, or pass --token".into()),
        });
    }
    FileConfig::deserialize(table).map_err(|e| ConfigError {
        problems: vec![format!("{shown}: {}", e.message().trim())],
        hint: Some(format!("the keys are: {KEYS}")),
    })
}

/// Merges flags, environment and file into [`Settings`]. `env` looks up a
/// variable (empty counts as unset); `file` is the discovered stamp.toml;
/// relative flag paths are taken from `cwd`, file paths from the file's
/// directory.
pub fn resolve(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    file: Option<(PathBuf, FileConfig)>,
    cwd: &Path,
) -> Result<Settings, ConfigError> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let mut problems = Vec::new();
    let (file_path, fc) = match file {
        Some((p, c)) => (Some(p), c),
        None => (None, FileConfig::default()),
    };
    let shown = file_path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let base_dir = file_path
        .as_ref()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| cwd.to_path_buf());
    let file_source = || {
        file_path
            .clone()
            .map(Source::File)
            .unwrap_or(Source::Default)
    };

    // server: flag > STAMP_SERVER > file > default
    let (server_raw, server_from) = if let Some(s) = &flags.server {
        (s.clone(), Source::Flag("--server"))
    } else if let Some(s) = env("STAMP_SERVER") {
        (s, Source::Env("STAMP_SERVER"))
    } else if let Some(s) = &fc.server {
        (s.clone(), file_source())
    } else {
        (DEFAULT_SERVER.to_string(), Source::Default)
    };
    let server = match normalize_server(&server_raw) {
        Ok(s) => s,
        Err(why) => {
            let key = match &server_from {
                Source::File(p) => format!("`server` in {}", p.display()),
                other => other.to_string(),
            };
            problems.push(format!("{key}: `{server_raw}` {why}"));
            String::new()
        }
    };

    // token: flag > STAMP_TOKEN (never the file)
    let (token, token_from) = if let Some(t) = flags.token.clone().filter(|t| !t.trim().is_empty())
    {
        (Some(t), Some(Source::Flag("--token")))
    } else if let Some(t) = env("STAMP_TOKEN") {
        (Some(t), Some(Source::Env("STAMP_TOKEN")))
    } else {
        (None, None)
    };
    if token
        .as_ref()
        .is_some_and(|t| t.chars().any(|c| c.is_control() || c == ' '))
    {
        problems.push(format!(
            "the token (from {}) has spaces or control characters",
            token_from.as_ref().map_or(String::new(), |s| s.to_string())
        ));
    }

    let project = match &fc.project {
        Some(p) => {
            let upper = p.trim().to_ascii_uppercase();
            if project_key_ok(&upper) {
                Some(upper)
            } else {
                problems.push(format!(
                    "{shown}: `project = \"{p}\"` is not a project key (like TKT: a letter, then letters, digits or _)"
                ));
                None
            }
        }
        None => None,
    };

    // folder: flag (from cwd) > file (from its directory) > ./src. A file's
    // paths are relative with `/` or `\` (it is shared between systems);
    // a flag is this system's own path.
    let mut file_folder = None;
    if let Some(f) = &fc.folder {
        match crate::paths::relative_setting(f) {
            Ok(names) => file_folder = Some(resolve_path(&join_names(&base_dir, names))),
            Err(why) => problems.push(format!("{shown}: `folder = \"{f}\"` {why}")),
        }
    }
    let (folder, folder_from) = if let Some(f) = &flags.folder {
        (resolve_path(&cwd.join(f)), Source::Flag("--folder"))
    } else if let Some(f) = &file_folder {
        (f.clone(), file_source())
    } else {
        (
            resolve_path(&base_dir.join(DEFAULT_FOLDER)),
            Source::Default,
        )
    };

    let url_path = match &fc.url_path {
        Some(u) => match normalize_url_path(u) {
            Ok(u) => Some((
                file_folder
                    .clone()
                    .unwrap_or_else(|| resolve_path(&base_dir.join(DEFAULT_FOLDER))),
                u,
            )),
            Err(why) => {
                problems.push(format!("{shown}: `url_path = \"{u}\"` {why}"));
                None
            }
        },
        None => None,
    };

    let main_branch = match &fc.main_branch {
        Some(b) if b.trim().is_empty() || b.contains(char::is_whitespace) || b.starts_with('-') => {
            problems.push(format!(
                "{shown}: `main_branch = \"{b}\"` is not a branch name"
            ));
            None
        }
        other => other.clone(),
    };

    let mut specifiers = Vec::new();
    for (spec, file) in &fc.specifiers {
        if !stamp_model::wire::is_bare_specifier(spec) {
            problems.push(format!(
                "{shown}: specifiers.\"{spec}\" is not a bare specifier (like \"@shop/cart\"; a path needs no mapping)"
            ));
            continue;
        }
        if file.trim().is_empty() {
            problems.push(format!("{shown}: specifiers.\"{spec}\" names no file"));
            continue;
        }
        match crate::paths::relative_setting(file) {
            Ok(names) => {
                specifiers.push((spec.clone(), resolve_path(&join_names(&base_dir, names))));
            }
            Err(why) => problems.push(format!("{shown}: specifiers.\"{spec}\" = \"{file}\" {why}")),
        }
    }

    if !problems.is_empty() {
        return Err(ConfigError {
            problems,
            hint: None,
        });
    }
    Ok(Settings {
        server,
        server_from,
        token,
        token_from,
        project,
        folder,
        folder_from,
        url_path,
        main_branch,
        build: fc.build,
        live: fc.live.unwrap_or(false),
        specifiers,
        file: file_path,
    })
}

/// `http(s)://host[:port][/prefix]` without a trailing slash, query or fragment.
pub fn normalize_server(raw: &str) -> Result<String, &'static str> {
    let s = raw.trim().trim_end_matches('/');
    let rest = s
        .strip_prefix("http://")
        .or_else(|| s.strip_prefix("https://"))
        .ok_or("is not an http:// or https:// URL")?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() || host.contains('@') {
        return Err("has no host (or has credentials in it)");
    }
    if s.contains('?') || s.contains('#') || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err("must not have a query, fragment or spaces");
    }
    Ok(s.to_string())
}

/// `/src`, `/` or `/static/js` (leading slash, no trailing one except for
/// `/`), or the same under another origin where production serves the
/// folder from a CDN: `https://cdn.example/lib`.
pub fn normalize_url_path(raw: &str) -> Result<String, &'static str> {
    let t = raw.trim();
    if stamp_model::assets::is_remote(t) {
        let scheme_end = t.find("://").map_or(0, |i| i + 3);
        let split = t[scheme_end..]
            .find('/')
            .map_or(t.len(), |i| scheme_end + i);
        let origin = stamp_model::assets::normalize_origin(&t[..split])
            .map_err(|_| "must be https://host[:port]/path with no user, query or fragment")?;
        let path = normalize_url_path(if split == t.len() { "/" } else { &t[split..] })?;
        return Ok(if path == "/" {
            origin
        } else {
            format!("{origin}{path}")
        });
    }
    if !t.starts_with('/') {
        return Err("must start with `/` (or be an https:// URL on a CDN)");
    }
    if t.contains('?') || t.contains('#') || t.contains('\\') || t.chars().any(char::is_control) {
        return Err("must be a plain path (no query, fragment or backslash)");
    }
    if t.split('/').any(|s| s == "." || s == "..") {
        return Err("must not have `.` or `..` segments");
    }
    let trimmed = t.trim_end_matches('/');
    Ok(if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    })
}

/// An absolute path with `.` and `..` resolved and symlinks resolved for the
/// part that exists (so it compares equal to what a directory walk yields,
/// also for files that no longer exist). On Windows the `\\?\` prefix
/// `canonicalize` adds is dropped where the plain path means the same file
/// (see [`crate::paths::tidy`]); the names keep their case on disk.
pub fn resolve_path(p: &Path) -> PathBuf {
    let mut lexical = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                lexical.pop();
            }
            Component::CurDir => {}
            other => lexical.push(other.as_os_str()),
        }
    }
    let mut existing = lexical.clone();
    let mut rest = Vec::new();
    loop {
        if let Ok(canon) = std::fs::canonicalize(&existing) {
            let mut out = crate::paths::tidy(canon);
            for r in rest.iter().rev() {
                out.push(r);
            }
            return out;
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return lexical,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn file(text: &str) -> Option<(PathBuf, FileConfig)> {
        let path = PathBuf::from("/repo/stamp.toml");
        Some((path.clone(), parse(text, &path).unwrap()))
    }

    #[test]
    fn server_precedence_is_flag_env_file_default() {
        let cwd = Path::new("/repo/sub");
        let f = file("server = \"http://file:1\"");
        let flags = Flags {
            server: Some("http://flag:1/".into()),
            ..Flags::default()
        };
        let env = env_of(&[("STAMP_SERVER", "http://env:1")]);
        let s = resolve(&flags, &env, f.clone(), cwd).unwrap();
        assert_eq!(
            (s.server.as_str(), &s.server_from),
            ("http://flag:1", &Source::Flag("--server"))
        );
        let s = resolve(&Flags::default(), &env, f.clone(), cwd).unwrap();
        assert_eq!(
            (s.server.as_str(), &s.server_from),
            ("http://env:1", &Source::Env("STAMP_SERVER"))
        );
        // An empty variable counts as unset.
        let empty = env_of(&[("STAMP_SERVER", "")]);
        let s = resolve(&Flags::default(), &empty, f.clone(), cwd).unwrap();
        assert_eq!(s.server, "http://file:1");
        assert!(matches!(s.server_from, Source::File(_)));
        let s = resolve(&Flags::default(), &env_of(&[]), None, cwd).unwrap();
        assert_eq!(
            (s.server.as_str(), &s.server_from),
            (DEFAULT_SERVER, &Source::Default)
        );
    }

    #[test]
    fn token_precedence_is_flag_then_env_and_never_the_file() {
        let cwd = Path::new("/repo");
        let env = env_of(&[("STAMP_TOKEN", "env-secret")]);
        let flags = Flags {
            token: Some("flag-secret".into()),
            ..Flags::default()
        };
        let s = resolve(&flags, &env, None, cwd).unwrap();
        assert_eq!(s.token.as_deref(), Some("flag-secret"));
        let s = resolve(&Flags::default(), &env, None, cwd).unwrap();
        assert_eq!(s.token.as_deref(), Some("env-secret"));
        assert_eq!(s.token_from, Some(Source::Env("STAMP_TOKEN")));
        let s = resolve(&Flags::default(), &env_of(&[]), None, cwd).unwrap();
        assert_eq!(s.token, None);
        let e = parse("token = \"x\"", Path::new("stamp.toml")).unwrap_err();
        assert!(e.hint.unwrap().contains("STAMP_TOKEN"));
        assert!(!s.describe().join(" ").contains("secret"));
    }

    #[test]
    fn folder_from_flag_is_relative_to_cwd_and_from_file_to_the_file() {
        let env = env_of(&[]);
        let f = file("folder = \"web/js\"");
        let s = resolve(
            &Flags::default(),
            &env,
            f.clone(),
            Path::new("/repo/deep/er"),
        )
        .unwrap();
        assert_eq!(s.folder, PathBuf::from("/repo/web/js"));
        let flags = Flags {
            folder: Some("lib".into()),
            ..Flags::default()
        };
        let s = resolve(&flags, &env, f, Path::new("/repo/deep")).unwrap();
        assert_eq!(s.folder, PathBuf::from("/repo/deep/lib"));
        assert_eq!(s.folder_from, Source::Flag("--folder"));
        // Default: ./src next to the file, or in the working directory.
        let s = resolve(&Flags::default(), &env, file(""), Path::new("/repo/x")).unwrap();
        assert_eq!(s.folder, PathBuf::from("/repo/src"));
        let s = resolve(&Flags::default(), &env, None, Path::new("/work")).unwrap();
        assert_eq!(s.folder, PathBuf::from("/work/src"));
    }

    #[test]
    fn folders_and_specifier_files_take_either_separator_and_must_be_relative() {
        let env = env_of(&[]);
        let cwd = Path::new("/repo");
        // What a Windows user writes in stamp.toml and package.json.
        let f = file("folder = 'web\\js'\n[specifiers]\n\"@shop/cart\" = 'web\\js\\cart.js'\n");
        let s = resolve(&Flags::default(), &env, f, cwd).unwrap();
        assert_eq!(s.folder, PathBuf::from("/repo/web/js"));
        assert_eq!(s.specifiers[0].1, PathBuf::from("/repo/web/js/cart.js"));
        let p = Path::new("/repo/package.json");
        let fc = parse_package(r#"{"ticket-stamp":{"folder":"dist\\assets"}}"#, p).unwrap();
        let s = resolve(&Flags::default(), &env, Some((p.to_path_buf(), fc)), cwd).unwrap();
        assert_eq!(s.folder, PathBuf::from("/repo/dist/assets"));
        // A monorepo's output above the file.
        let s = resolve(
            &Flags::default(),
            &env,
            file("folder = '..\\dist\\shop'"),
            cwd,
        )
        .unwrap();
        assert_eq!(s.folder, PathBuf::from("/dist/shop"));
        // A path on one machine only is refused, with the key and what to do.
        for bad in [
            "folder = 'C:\\work\\shop\\src'",
            "folder = '\\\\server\\share\\src'",
            "folder = '/home/me/shop/src'",
            "[specifiers]\n\"@shop/cart\" = 'D:\\cart.js'",
        ] {
            let e = resolve(&Flags::default(), &env, file(bad), cwd).unwrap_err();
            let all = e.problems.join("\n");
            assert!(
                all.contains("must be relative") && all.contains("--folder"),
                "{bad}: {all}"
            );
        }
        // A flag is this system's own path, absolute or not.
        let flags = Flags {
            folder: Some("/elsewhere/src".into()),
            ..Flags::default()
        };
        let s = resolve(&flags, &env, file("folder = 'src'"), cwd).unwrap();
        assert_eq!(s.folder, PathBuf::from("/elsewhere/src"));
    }

    #[test]
    fn url_path_applies_to_the_configured_folder_and_its_subfolders() {
        let f = file("folder = \"dist\"\nurl_path = \"/assets/\"");
        let s = resolve(&Flags::default(), &env_of(&[]), f, Path::new("/repo")).unwrap();
        assert_eq!(
            s.configured_url_path(Path::new("/repo/dist")).as_deref(),
            Some("/assets")
        );
        assert_eq!(
            s.configured_url_path(Path::new("/repo/dist/cart"))
                .as_deref(),
            Some("/assets/cart")
        );
        assert_eq!(s.configured_url_path(Path::new("/repo/other")), None);
        let f = file("url_path = \"/\"");
        let s = resolve(&Flags::default(), &env_of(&[]), f, Path::new("/repo")).unwrap();
        assert_eq!(
            s.configured_url_path(Path::new("/repo/src")).as_deref(),
            Some("/")
        );
        assert_eq!(crate::paths::join_url("/", "a.js"), "/a.js");
        assert_eq!(crate::paths::join_url("/src", "lib/a.js"), "/src/lib/a.js");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let f = file(
            "server = \"ftp://x\"\nproject = \"9x\"\nurl_path = \"src\"\n[specifiers]\n\"/abs.js\" = \"a.js\"\n\"@ok/x\" = \"src/x.js\"\n",
        );
        let e = resolve(&Flags::default(), &env_of(&[]), f, Path::new("/repo")).unwrap_err();
        let all = e.problems.join("\n");
        for needle in [
            "`server`",
            "`project",
            "`url_path",
            "specifiers.\"/abs.js\"",
        ] {
            assert!(all.contains(needle), "{needle} missing in:\n{all}");
        }
        assert_eq!(e.problems.len(), 4, "{all}");
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_errors() {
        let e = parse("sever = \"http://x\"", Path::new("/r/stamp.toml")).unwrap_err();
        assert!(e.problems[0].contains("sever"), "{e:?}");
        assert!(e.hint.unwrap().contains("server, project"));
        let e = parse("server = ", Path::new("/r/stamp.toml")).unwrap_err();
        assert!(e.problems[0].starts_with("/r/stamp.toml"), "{e:?}");
    }

    #[test]
    fn project_key_and_specifiers() {
        let f = file("project = \"shop\"\n[specifiers]\n\"@shop/cart\" = \"dist/cart.js\"\n");
        let s = resolve(&Flags::default(), &env_of(&[]), f, Path::new("/repo")).unwrap();
        assert_eq!(s.project.as_deref(), Some("SHOP"));
        assert_eq!(
            s.specifiers,
            [(
                "@shop/cart".to_string(),
                PathBuf::from("/repo/dist/cart.js")
            )]
        );
    }

    #[test]
    fn servers_are_normalised() {
        assert_eq!(normalize_server("http://h:8080/").unwrap(), "http://h:8080");
        assert_eq!(
            normalize_server("https://h/base/").unwrap(),
            "https://h/base"
        );
        for bad in [
            "h:8080",
            "http://",
            "http://u:p@h",
            "http://h/?x",
            "ftp://h",
        ] {
            assert!(normalize_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn discovery_walks_up_to_the_nearest_file() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(discover(&deep).filter(|p| p.starts_with(dir.path())), None);
        std::fs::write(dir.path().join("a/stamp.toml"), "").unwrap();
        assert_eq!(discover(&deep), Some(dir.path().join("a/stamp.toml")));
        std::fs::write(dir.path().join("a/b/stamp.toml"), "").unwrap();
        assert_eq!(discover(&deep), Some(dir.path().join("a/b/stamp.toml")));
        // A package.json counts only with a "ticket-stamp" key.
        std::fs::write(dir.path().join("a/b/c/package.json"), r#"{"name":"shop"}"#).unwrap();
        assert_eq!(discover(&deep), Some(dir.path().join("a/b/stamp.toml")));
        std::fs::write(
            dir.path().join("a/b/c/package.json"),
            r#"{"name":"shop","ticket-stamp":{"folder":"dist","build":true}}"#,
        )
        .unwrap();
        let found = discover(&deep).unwrap();
        assert_eq!(found, dir.path().join("a/b/c/package.json"));
        let fc = load(&found).unwrap();
        assert_eq!(fc.folder.as_deref(), Some("dist"));
        assert_eq!(fc.build, Some(true));
    }

    #[test]
    fn package_json_settings_are_checked_like_stamp_toml() {
        let p = Path::new("package.json");
        for (text, needle) in [
            (
                r#"{"ticket-stamp":{"folder":"src","colour":"red"}}"#,
                "colour",
            ),
            (r#"{"ticket-stamp":{"token":"secret"}}"#, "token"),
            (r#"{"ticket-stamp":"src"}"#, "must be an object"),
            (r#"{"ticket-stamp":{"folder":3}}"#, "folder"),
            ("{not json", "not valid JSON"),
        ] {
            let e = parse_package(text, p).unwrap_err();
            assert!(e.problems.join(" ").contains(needle), "{text}: {e:?}");
        }
    }

    #[test]
    fn paths_resolve_dot_dot_and_missing_tails() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(
            resolve_path(&dir.path().join("x/../y/z.js")),
            real.join("y/z.js")
        );
    }
}
