//! Rails' import map (`importmap-rails`): `config/importmap.rb` pins each
//! module of `app/javascript` under a bare specifier, and production's map
//! points it at a digested asset URL
//! (`"controllers/hello_controller": "/assets/controllers/hello_controller-708796bd.js"`).
//! A ticket's file therefore replaces production's by its specifier, never
//! by its path, which no digest of the ticket's would match. This reads the
//! pins as importmap-rails' `Importmap::Map` does, for the forms its
//! generators and guides write:
//!
//! - `pin "application"`: `app/javascript/application.js`;
//! - `pin "name", to: "file.js"`: `app/javascript/file.js` (or
//!   `vendor/javascript/`); a `to:` URL names no file here;
//! - `pin_all_from "app/javascript/controllers", under: "controllers"`:
//!   every `.js` and `.jsm` below the folder, named by its path there
//!   without the extension, an `index` by its folder, prefixed by `under`
//!   (`module_name_from`).
//!
//! Rails' precedence: a later `pin` of a name replaces an earlier one, and
//! every `pin_all_from` name is written over the `pin`s, whatever the line
//! order (within a folder, files in sorted order, so `foo/index.js` names
//! `foo` over `foo.js`). One file may have several names. Files are looked
//! up when asked, and the file is read again for each sync, so a controller
//! created while watching, or a pin added, counts as Rails will count it.
//!
//! What Ruby decides at run time (a pin under `if`, in a block or a loop, a
//! name built by interpolation) is left out: such files go by their paths,
//! and `stamp.toml`'s `[specifiers]` can name them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::paths;

/// Larger than any `importmap.rb`: a file past it is not read.
const MAX_BYTES: u64 = 1 << 20;
/// Without a repository, how far above the folder the Rails root may be
/// (`app/javascript` is two below it).
const MAX_UP: usize = 3;

/// Where a Rails app's pins are: its root and its `config/importmap.rb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub root: PathBuf,
    pub file: PathBuf,
}

impl Source {
    /// The nearest `config/importmap.rb` in `folder` or a folder above it:
    /// no higher than `top` (the repository's root) when there is one,
    /// else at most three folders up.
    pub fn find(folder: &Path, top: Option<&Path>) -> Option<Source> {
        let mut dir = Some(folder);
        let mut up = 0;
        while let Some(d) = dir {
            let file = d.join("config").join("importmap.rb");
            if file.is_file() {
                return Some(Source {
                    root: d.to_path_buf(),
                    file,
                });
            }
            match top {
                Some(t) if d == t => break,
                None if up == MAX_UP => break,
                _ => {}
            }
            up += 1;
            dir = d.parent();
        }
        None
    }

    /// The pins as the file says now; none when it cannot be read.
    pub fn read(&self) -> Pins {
        let text = std::fs::metadata(&self.file)
            .ok()
            .filter(|m| m.len() <= MAX_BYTES)
            .and_then(|_| std::fs::read_to_string(&self.file).ok())
            .unwrap_or_default();
        Pins::parse(&self.root, &text)
    }
}

/// The pins of one Rails app.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    /// `pin`: name → the files it may be, in the order Rails looks.
    pinned: HashMap<String, Vec<PathBuf>>,
    /// `pin_all_from`: the folder and its prefix, in the file's order.
    folders: Vec<(PathBuf, Option<String>)>,
}

impl Pins {
    /// Reads `config/importmap.rb`'s text for the app at `root`.
    pub fn parse(root: &Path, text: &str) -> Pins {
        let mut pins = Pins::default();
        for statement in statements(text) {
            let Some((verb, rest)) = statement.split_once(char::is_whitespace) else {
                continue;
            };
            let Some((name, options)) = string(rest.trim_start()) else {
                continue;
            };
            let Ok(options) = parse_options(options) else {
                continue;
            };
            match verb {
                "pin" => {
                    if !stamp_model::wire::is_bare_specifier(&name) {
                        continue;
                    }
                    let to = options.get("to").cloned();
                    let file = to.unwrap_or_else(|| format!("{name}.js"));
                    // A URL, or a path that leaves the app, is no file of it
                    // (and a later pin of the name still replaces this one).
                    let candidates = if file.contains("://") || !inside(&file) {
                        Vec::new()
                    } else {
                        ["app/javascript", "vendor/javascript"]
                            .iter()
                            .map(|base| paths::join_slash(&root.join(base), &file))
                            .collect()
                    };
                    pins.pinned.insert(name, candidates);
                }
                "pin_all_from" if inside(&name) => {
                    let under = options.get("under").cloned().filter(|u| !u.is_empty());
                    pins.folders.push((paths::join_slash(root, &name), under));
                }
                _ => {}
            }
        }
        pins
    }

    /// Every path the pins name (the files a `pin` may be, the folders of
    /// `pin_all_from`), for checks that none leaves the app.
    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.pinned
            .values()
            .flatten()
            .map(PathBuf::as_path)
            .chain(self.folders.iter().map(|(f, _)| f.as_path()))
    }

    /// Every name Rails gives `file`: those whose module is this file once
    /// Rails' precedence is applied.
    pub fn names(&self, file: &Path) -> Vec<String> {
        let mut candidates: Vec<String> = self
            .folders
            .iter()
            .filter_map(|(folder, under)| folder_name(folder, under.as_deref(), file))
            .collect();
        candidates.extend(
            self.pinned
                .iter()
                .filter(|(_, files)| files.iter().any(|f| f == file))
                .map(|(name, _)| name.clone()),
        );
        candidates.sort();
        candidates.dedup();
        candidates.retain(|n| self.module(n).as_deref() == Some(file));
        candidates
    }

    /// The file Rails serves under `name`: the last folder pin that has
    /// one, else the `pin`'s first file that exists.
    fn module(&self, name: &str) -> Option<PathBuf> {
        if !stamp_model::wire::is_bare_specifier(name) {
            return None;
        }
        let from_folders = self.folders.iter().rev().find_map(|(folder, under)| {
            let rest = match under {
                Some(u) if name == u => "",
                Some(u) => name.strip_prefix(u.as_str())?.strip_prefix('/')?,
                None => name,
            };
            // The names' files in sorted order; the last that exists wins.
            let mut files: Vec<String> = if rest.is_empty() {
                vec!["index.js".into(), "index.jsm".into()]
            } else {
                vec![
                    format!("{rest}.js"),
                    format!("{rest}.jsm"),
                    format!("{rest}/index.js"),
                    format!("{rest}/index.jsm"),
                ]
            };
            files.sort();
            files
                .iter()
                .filter(|f| inside(f))
                .map(|f| paths::join_slash(folder, f))
                .rfind(|p| p.is_file())
        });
        from_folders.or_else(|| self.pinned.get(name)?.iter().find(|f| f.is_file()).cloned())
    }
}

/// The name a `pin_all_from` of `folder` gives `file` (importmap-rails'
/// `module_name_from`), if it covers it.
fn folder_name(folder: &Path, under: Option<&str>, file: &Path) -> Option<String> {
    let rel = paths::relative_slash(folder, file)?;
    let stem = rel
        .strip_suffix(".js")
        .or_else(|| rel.strip_suffix(".jsm"))?;
    let stem = match stem.strip_suffix("index") {
        Some(rest) if rest.is_empty() || rest.ends_with('/') => rest.trim_end_matches('/'),
        _ => stem,
    };
    let name = match (under, stem) {
        (Some(u), "") => u.to_string(),
        (Some(u), s) => format!("{u}/{s}"),
        (None, "") => return None,
        (None, s) => s.to_string(),
    };
    stamp_model::wire::is_bare_specifier(&name).then_some(name)
}

/// The file's statements that always run: comments and `=begin` blocks
/// dropped, a line ending in `,` joined with the next, and nothing under
/// `if`, `unless`, a loop or a block (nor a statement with such a
/// modifier).
fn statements(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut in_doc = false;
    let mut pending = String::new();
    for line in text.lines() {
        if in_doc {
            in_doc = !line.starts_with("=end");
            continue;
        }
        if line.starts_with("=begin") {
            in_doc = true;
            continue;
        }
        let code = without_comment(line);
        pending.push_str(code.trim());
        if pending.ends_with(',') {
            pending.push(' ');
            continue;
        }
        let statement = std::mem::take(&mut pending);
        let words = words_outside_strings(&statement);
        let first = words.first().map(String::as_str);
        if matches!(
            first,
            Some(
                "if" | "unless" | "while" | "until" | "case" | "begin" | "def" | "module" | "class"
            )
        ) || words.iter().any(|w| w == "do")
        {
            depth += 1;
            continue;
        }
        if first == Some("end") {
            depth = depth.saturating_sub(1);
            continue;
        }
        if depth > 0 || words.iter().skip(1).any(|w| w == "if" || w == "unless") {
            continue;
        }
        if !statement.is_empty() {
            out.push(statement);
        }
    }
    out
}

/// `line` up to a `#` outside a string.
fn without_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The words of a statement, strings left out.
fn words_outside_strings(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, c) if c.is_alphanumeric() || c == '_' || c == '?' => word.push(c),
            (None, _) => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// Whether a relative path stays inside the folder it is joined to.
fn inside(rel: &str) -> bool {
    !rel.starts_with('/')
        && !rel.contains(['\\', ':'])
        && rel.split('/').all(|n| n != ".." && n != ".")
}

/// A Ruby string literal at the start of `s` (`"…"` or `'…'`, no
/// interpolation, no escapes), and what follows it.
fn string(s: &str) -> Option<(String, &str)> {
    let quote = s.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = &s[1..];
    let end = body.find(quote)?;
    let text = &body[..end];
    if text.contains('\\') || (quote == '"' && text.contains("#{")) || text.is_empty() {
        return None;
    }
    Some((text.to_string(), &body[end + 1..]))
}

/// A pin's options after its name (`, to: "x", preload: false`, `:to =>
/// "x"`, `"to" => "x"`): the string-valued ones; `Err` when they do not
/// read as options at all.
fn parse_options(mut rest: &str) -> Result<HashMap<String, String>, ()> {
    let mut out = HashMap::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Ok(out);
        }
        rest = rest.strip_prefix(',').ok_or(())?.trim_start();
        // The key: `to:`, `:to =>`, `"to" =>`.
        let (key, after) = if let Some((k, after)) = string(rest) {
            (k, after.trim_start().strip_prefix("=>").ok_or(())?)
        } else if let Some(sym) = rest.strip_prefix(':') {
            let end = sym
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(sym.len());
            let after = sym[end..].trim_start().strip_prefix("=>").ok_or(())?;
            (sym[..end].to_string(), after)
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let after = rest[end..].strip_prefix(':').ok_or(())?;
            (rest[..end].to_string(), after)
        };
        if key.is_empty() {
            return Err(());
        }
        let value = after.trim_start();
        // A string value is kept; another (`true`, `false`, a symbol) is
        // skipped up to the next comma; `to:` and `under:` must be strings.
        if let Some((v, after)) = string(value) {
            out.insert(key, v);
            rest = after;
        } else {
            if key == "to" || key == "under" {
                return Err(());
            }
            let end = value.find(',').unwrap_or(value.len());
            if value[..end].trim().is_empty() {
                return Err(());
            }
            rest = &value[end..];
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn app(files: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in files {
            let p = dir.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "export {}\n").unwrap();
        }
        dir
    }

    const IMPORTMAP_RB: &str = r##"# Pin npm packages by running ./bin/importmap

pin "application"
pin "@hotwired/turbo-rails", to: "turbo.min.js"
pin "@hotwired/stimulus", to: "stimulus.min.js"
pin "@hotwired/stimulus-loading", to: "stimulus-loading.js"
pin_all_from "app/javascript/controllers", under: "controllers"
pin_all_from 'app/javascript/lib'
pin "local-time", to: "https://ga.jspm.io/npm:local-time@2.1.0/app/assets/javascripts/local-time.js" # @2.1.0
pin "chart", :to => 'charts/index.js', preload: false
pin "#{name}/x"
  pin   "spaced"    # a comment, to: "elsewhere.js"
pin "dev_only" if Rails.env.development?
if Rails.env.test?
  pin "test_only"
end
=begin
pin "documented"
=end
pin_all_from "app/javascript/components",
  under: "components",
  preload: true
pin "money", to: "lib/money.js"
"##;

    #[test]
    fn pins_name_the_files_rails_serves_under_them() {
        let dir = app(&[
            "app/javascript/application.js",
            "vendor/javascript/stimulus.min.js",
            "app/javascript/controllers/hello_controller.js",
            "app/javascript/controllers/index.js",
            "app/javascript/controllers/admin/users_controller.js",
            "app/javascript/controllers/admin/index.js",
            "app/javascript/controllers/legacy_controller.jsm",
            "app/javascript/lib/money.js",
            "app/javascript/charts/index.js",
            "app/javascript/spaced.js",
            "app/javascript/controllers/notes.txt",
            "app/javascript/elsewhere.js",
            "app/javascript/dev_only.js",
            "app/javascript/test_only.js",
            "app/javascript/documented.js",
            "app/javascript/components/card.js",
        ]);
        let root = dir.path();
        let pins = Pins::parse(root, IMPORTMAP_RB);
        let js = |rel: &str| root.join(rel);
        for (file, want) in [
            ("app/javascript/application.js", &["application"][..]),
            ("vendor/javascript/stimulus.min.js", &["@hotwired/stimulus"]),
            (
                "app/javascript/controllers/hello_controller.js",
                &["controllers/hello_controller"],
            ),
            ("app/javascript/controllers/index.js", &["controllers"]),
            (
                "app/javascript/controllers/admin/users_controller.js",
                &["controllers/admin/users_controller"],
            ),
            (
                "app/javascript/controllers/admin/index.js",
                &["controllers/admin"],
            ),
            (
                "app/javascript/controllers/legacy_controller.jsm",
                &["controllers/legacy_controller"],
            ),
            // Pinned by name and from its folder: both names are its.
            ("app/javascript/lib/money.js", &["money"]),
            ("app/javascript/charts/index.js", &["chart"]),
            ("app/javascript/spaced.js", &["spaced"]),
            ("app/javascript/components/card.js", &["components/card"]),
            ("app/javascript/controllers/notes.txt", &[]),
            ("app/javascript/elsewhere.js", &[]),
            ("app/javascript/dev_only.js", &[]),
            ("app/javascript/test_only.js", &[]),
            ("app/javascript/documented.js", &[]),
            // Created after the pins were read: pinned as Rails will.
            (
                "app/javascript/controllers/new_controller.js",
                &["controllers/new_controller"],
            ),
        ] {
            if !root.join(file).exists() && file.ends_with("new_controller.js") {
                std::fs::write(root.join(file), "export {}\n").unwrap();
            }
            assert_eq!(pins.names(&js(file)), want, "{file}");
        }
        // A pin whose file is not in the app (a gem's, a CDN's) names nothing.
        assert_eq!(pins.module("@hotwired/turbo-rails"), None);
        assert_eq!(pins.module("local-time"), None);
    }

    #[test]
    fn rails_precedence_decides_which_file_a_name_is() {
        let dir = app(&[
            "app/javascript/lib/money.js",
            "app/javascript/legacy/x.js",
            "app/javascript/controllers/x.js",
            "app/javascript/widgets/foo.js",
            "app/javascript/widgets/foo/index.js",
            "app/javascript/a.js",
            "app/javascript/b.js",
        ]);
        let root = dir.path();
        let rb = r#"
pin "money", to: "lib/money.js"
pin_all_from "app/javascript/lib", under: "lib"
pin "controllers/x", to: "legacy/x.js"
pin_all_from "app/javascript/controllers", under: "controllers"
pin_all_from "app/javascript/widgets", under: "widgets"
pin "twice", to: "a.js"
pin "twice", to: "b.js"
"#;
        let pins = Pins::parse(root, rb);
        let names = |rel: &str| pins.names(&root.join(rel));
        // One file, two names.
        assert_eq!(names("app/javascript/lib/money.js"), ["lib/money", "money"]);
        // A folder's name wins over a pin of the same name.
        assert_eq!(names("app/javascript/controllers/x.js"), ["controllers/x"]);
        assert!(names("app/javascript/legacy/x.js").is_empty());
        // Within a folder, `foo/index.js` names `foo` over `foo.js`.
        assert_eq!(
            names("app/javascript/widgets/foo/index.js"),
            ["widgets/foo"]
        );
        assert!(names("app/javascript/widgets/foo.js").is_empty());
        // A later pin of a name replaces the earlier.
        assert_eq!(names("app/javascript/b.js"), ["twice"]);
        assert!(names("app/javascript/a.js").is_empty());
    }

    #[test]
    fn the_nearest_importmap_rb_up_to_the_repository_is_found() {
        let dir = app(&["app/javascript/application.js"]);
        std::fs::create_dir_all(dir.path().join("config")).unwrap();
        std::fs::write(
            dir.path().join("config/importmap.rb"),
            "pin \"application\"\n",
        )
        .unwrap();
        let folder = dir.path().join("app/javascript");
        let source = Source::find(&folder, Some(dir.path())).unwrap();
        assert_eq!(source.file, dir.path().join("config/importmap.rb"));
        assert_eq!(
            source.read().names(&folder.join("application.js")),
            ["application"]
        );
        // Without a repository, found within three folders up.
        assert_eq!(Source::find(&folder, None), Some(source));
        // Not above the repository's root.
        assert_eq!(Source::find(&folder, Some(&folder)), None);
        // A file too large to be one is not read.
        std::fs::write(
            dir.path().join("config/importmap.rb"),
            "#".repeat(MAX_BYTES as usize + 1),
        )
        .unwrap();
        let source = Source::find(&folder, None).unwrap();
        assert_eq!(source.read(), Pins::default());
    }

    #[test]
    fn malformed_or_hostile_pins_name_nothing() {
        let dir = app(&["app/javascript/a.js", "app/javascript/x/a.js"]);
        for text in [
            "pin",
            "pin ",
            "pin \"",
            "pin ''",
            "pin \"a\\\"b\"",
            "pin a",
            "pin_all_from",
            "pin \"a\", to:",
            "pin \"a\", to: 5",
            "pin \"a\" to: \"a.js\"",
            "pin \"a\", :",
            "\u{0}pin \"a\"",
            "pin \"/a\"",
            "pin \"a b\"",
            "pin \"https://x/a\"",
            "pin \"a\" unless false",
            "pin_all_from \"app/javascript/../javascript\"",
            "pin_all_from \"C:/app/javascript\"",
            "pin_all_from \"/etc\"",
        ] {
            let pins = Pins::parse(dir.path(), text);
            assert!(
                pins.names(&dir.path().join("app/javascript/a.js"))
                    .is_empty(),
                "{text:?}"
            );
        }
        // A pin that climbs out of the app names no file outside it.
        for to in ["../../../etc/passwd", "/etc/passwd", "C:/x.js", "./a.js"] {
            let pins = Pins::parse(dir.path(), &format!("pin \"x\", to: \"{to}\""));
            assert_eq!(pins.module("x"), None, "{to}");
        }
    }
}
