//! Rails' import map (`importmap-rails`): `config/importmap.rb` pins each
//! module of `app/javascript` under a bare specifier, and production's map
//! points it at a digested asset URL
//! (`"controllers/hello_controller": "/assets/controllers/hello_controller-708796bd.js"`).
//! A ticket's file therefore replaces production's by its specifier, never
//! by its path, which no digest of the ticket's would match. This reads the
//! pins as importmap-rails does for the forms its generators and guides
//! write:
//!
//! - `pin "application"`: `app/javascript/application.js`;
//! - `pin "name", to: "file.js"`: `app/javascript/file.js` (or
//!   `vendor/javascript/`), skipped when `to:` is a URL;
//! - `pin_all_from "app/javascript/controllers", under: "controllers"`:
//!   every `.js` below the folder, named by its path there without `.js`,
//!   an `index.js` by its folder, prefixed by `under` (importmap-rails'
//!   `module_name_from`). Read again for each file, so a controller created
//!   while watching is pinned as Rails will pin it.
//!
//! Anything else (Ruby that computes a name, interpolation) is left out: its
//! files go by their paths, and `stamp.toml`'s `[specifiers]` can name them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::paths;

/// The pins of one Rails app: files pinned one by one, and folders pinned
/// whole with their prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pins {
    /// The file `config/importmap.rb` that was read.
    pub source: PathBuf,
    files: HashMap<PathBuf, String>,
    folders: Vec<(PathBuf, Option<String>)>,
}

impl Pins {
    /// The pins of the Rails app `folder` belongs to: the nearest
    /// `config/importmap.rb` in `folder` or a folder above it, no higher
    /// than `top` (the repository's root) when there is one.
    pub fn find(folder: &Path, top: Option<&Path>) -> Option<Pins> {
        let mut dir = Some(folder);
        while let Some(d) = dir {
            let file = d.join("config").join("importmap.rb");
            if file.is_file() {
                let text = std::fs::read_to_string(&file).ok()?;
                let mut pins = Pins::read(d, &text);
                pins.source = file;
                return Some(pins);
            }
            if top.is_some_and(|t| d == t) {
                break;
            }
            dir = d.parent();
        }
        None
    }

    /// Reads `config/importmap.rb`'s text for the app at `root`.
    pub fn read(root: &Path, text: &str) -> Pins {
        let mut pins = Pins::default();
        for line in text.lines() {
            let Some((verb, rest)) = line.trim_start().split_once(char::is_whitespace) else {
                continue;
            };
            let rest = rest.trim_start();
            let Some((name, options)) = string(rest) else {
                continue;
            };
            match verb {
                "pin" => {
                    let file = match option(options, "to") {
                        None => format!("{name}.js"),
                        Some(Ok(to)) if !to.contains("://") && !to.starts_with("//") => to,
                        Some(_) => continue,
                    };
                    if !inside(&file) {
                        continue;
                    }
                    for base in ["app/javascript", "vendor/javascript"] {
                        let path = paths::join_slash(&root.join(base), &file);
                        if path.is_file() {
                            pins.files.insert(path, name.clone());
                            break;
                        }
                    }
                }
                "pin_all_from" => {
                    let under = match option(options, "under") {
                        None => None,
                        Some(Ok(u)) => Some(u),
                        Some(Err(())) => continue,
                    };
                    if inside(&name) {
                        pins.folders.push((paths::join_slash(root, &name), under));
                    }
                }
                _ => {}
            }
        }
        pins
    }

    /// The specifier Rails pins `file` under, if it does.
    pub fn specifier(&self, file: &Path) -> Option<String> {
        if let Some(name) = self.files.get(file) {
            return Some(name.clone());
        }
        // The last `pin_all_from` that covers the file wins, as in Rails.
        self.folders.iter().rev().find_map(|(folder, under)| {
            let rel = paths::relative_slash(folder, file)?;
            let stem = rel.strip_suffix(".js")?;
            let stem = match stem.strip_suffix("index") {
                Some(rest) if rest.is_empty() || rest.ends_with('/') => rest.trim_end_matches('/'),
                _ => stem,
            };
            let name = match (under.as_deref(), stem) {
                (Some(u), "") => u.to_string(),
                (Some(u), s) => format!("{u}/{s}"),
                (None, "") => return None,
                (None, s) => s.to_string(),
            };
            Some(name)
        })
    }

    /// How many pins were read (for `stamp -v`).
    pub fn len(&self) -> usize {
        self.files.len() + self.folders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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

/// Whether a relative path stays inside the folder it is joined to.
fn inside(rel: &str) -> bool {
    !rel.starts_with('/') && !rel.contains('\\') && rel.split('/').all(|n| n != "..")
}

/// Option `name` among a pin's options (`to: "x"`, `:to => "x"`,
/// `"to" => "x"`), read up to a comment: `None` when it is not there,
/// `Err` when its value is not a plain string.
fn option(options: &str, name: &str) -> Option<Result<String, ()>> {
    let mut rest = options;
    while let Some(comma) = rest.find(',') {
        rest = rest[comma + 1..].trim_start();
        let value = rest
            .strip_prefix(name)
            .and_then(|r| r.strip_prefix(':'))
            .or_else(|| {
                rest.strip_prefix(':')
                    .and_then(|r| r.strip_prefix(name))
                    .or_else(|| {
                        rest.strip_prefix('"')
                            .and_then(|r| r.strip_prefix(name))
                            .and_then(|r| r.strip_prefix('"'))
                    })
                    .and_then(|r| r.trim_start().strip_prefix("=>"))
            });
        if let Some(v) = value {
            return Some(string(v.trim_start()).map(|(s, _)| s).ok_or(()));
        }
        if rest.starts_with('#') {
            break;
        }
    }
    None
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
  pin   "spaced"    # a comment, pin "not-this"
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
            "app/javascript/lib/money.js",
            "app/javascript/charts/index.js",
            "app/javascript/spaced.js",
            "app/javascript/controllers/notes.txt",
            "app/javascript/elsewhere.js",
        ]);
        let root = dir.path();
        let pins = Pins::read(root, IMPORTMAP_RB);
        let js = |rel: &str| root.join(rel);
        for (file, want) in [
            ("app/javascript/application.js", Some("application")),
            (
                "vendor/javascript/stimulus.min.js",
                Some("@hotwired/stimulus"),
            ),
            (
                "app/javascript/controllers/hello_controller.js",
                Some("controllers/hello_controller"),
            ),
            ("app/javascript/controllers/index.js", Some("controllers")),
            (
                "app/javascript/controllers/admin/users_controller.js",
                Some("controllers/admin/users_controller"),
            ),
            (
                "app/javascript/controllers/admin/index.js",
                Some("controllers/admin"),
            ),
            ("app/javascript/lib/money.js", Some("money")),
            ("app/javascript/charts/index.js", Some("chart")),
            ("app/javascript/spaced.js", Some("spaced")),
            ("app/javascript/controllers/notes.txt", None),
            ("app/javascript/elsewhere.js", None),
            // Created after the pins were read: pinned as Rails will.
            (
                "app/javascript/controllers/new_controller.js",
                Some("controllers/new_controller"),
            ),
        ] {
            assert_eq!(pins.specifier(&js(file)).as_deref(), want, "{file}");
        }
        // A pin whose file is not in the app (a gem's, a CDN's) names nothing.
        assert!(!pins.files.values().any(|n| n == "@hotwired/turbo-rails"));
        assert!(!pins.files.values().any(|n| n == "local-time"));
        assert!(!pins.files.values().any(|n| n.contains("#{")));
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
        let pins = Pins::find(&folder, Some(dir.path())).unwrap();
        assert_eq!(pins.source, dir.path().join("config/importmap.rb"));
        assert_eq!(
            pins.specifier(&folder.join("application.js")).as_deref(),
            Some("application")
        );
        // Not above the repository's root.
        assert_eq!(Pins::find(&folder, Some(&folder)), None);
    }

    #[test]
    fn malformed_pins_are_skipped() {
        let dir = app(&["app/javascript/a.js"]);
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
            "\u{0}pin \"a\"",
        ] {
            let pins = Pins::read(dir.path(), text);
            assert_eq!(
                pins.specifier(&dir.path().join("app/javascript/a.js")),
                None,
                "{text:?}"
            );
        }
        // A pin that climbs out of the app names no file outside it.
        let pins = Pins::read(dir.path(), "pin \"x\", to: \"../../../etc/passwd\"");
        assert!(pins.files.is_empty());
    }
}
