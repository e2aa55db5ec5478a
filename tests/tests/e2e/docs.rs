//! The docs cannot rot: every relative link in every Markdown file of the
//! repository points at a file that exists (and at a heading it has), and
//! every command in a shell block runs as written as far as can be checked
//! without side effects: our binaries accept its flags (they are run with
//! `--help` appended, which clap answers only when every flag before it is
//! known), scripts exist and are executable, and cargo's packages, examples,
//! benches and binaries exist. Every end-to-end test a guide names
//! (`` `module::test_name` ``, `` `e2e::module::test_name` ``) exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Every Markdown file we wrote (not dependencies', not build output).
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | "node_modules" | ".git" | "corpus") {
                    walk(&p, out);
                }
            } else if name.ends_with(".md") {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), &mut out);
    out.sort();
    out
}

/// GitHub's anchor for a heading: lower case, punctuation dropped (but `-`
/// and `_`), spaces to `-`; repeats get `-1`, `-2`, ….
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == '-' || *c == '_' || *c == ' ')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut candidate = slug.clone();
        let mut n = 0;
        while seen.contains(&candidate) {
            n += 1;
            candidate = format!("{slug}-{n}");
        }
        seen.insert(candidate);
    }
    seen
}

/// The targets of `[text](target)` links outside code.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Inline code is no link.
        let mut plain = String::new();
        let mut in_code = false;
        for c in line.chars() {
            if c == '`' {
                in_code = !in_code;
            } else if !in_code {
                plain.push(c);
            }
        }
        let mut rest = plain.as_str();
        while let Some(i) = rest.find("](") {
            rest = &rest[i + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            out.push(rest[..end].trim().to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_link_in_the_docs_resolves() {
    let files = markdown_files();
    assert!(files.len() >= 7, "{files:?}");
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in links(&text) {
            if target.starts_with("http://")
                || target.starts_with("https://")
                || target.starts_with("mailto:")
            {
                continue;
            }
            let (path, fragment) = match target.split_once('#') {
                Some((p, f)) => (p, Some(f)),
                None => (target.as_str(), None),
            };
            let dest = if path.is_empty() {
                file.clone()
            } else {
                file.parent().unwrap().join(path)
            };
            if !dest.exists() {
                broken.push(format!("{}: {target}: no such file", file.display()));
                continue;
            }
            if let Some(fragment) = fragment {
                let heads = anchors(&std::fs::read_to_string(&dest).unwrap_or_default());
                if !heads.contains(fragment) {
                    broken.push(format!("{}: {target}: no such heading", file.display()));
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Splits a command line like a shell would, for the simple lines docs
/// carry: quotes, and words; `&&` and `;` separate commands.
fn commands(line: &str) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    let mut word = String::new();
    let mut has_word = false;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                has_word = true;
            }
            (None, '#') if !has_word && word.is_empty() => break,
            (None, ' ' | '\t') => {
                if has_word || !word.is_empty() {
                    out.last_mut().unwrap().push(std::mem::take(&mut word));
                    has_word = false;
                }
            }
            (None, ';') => {
                if has_word || !word.is_empty() {
                    out.last_mut().unwrap().push(std::mem::take(&mut word));
                    has_word = false;
                }
                out.push(Vec::new());
            }
            (None, '&') if chars.peek() == Some(&'&') => {
                chars.next();
                if has_word || !word.is_empty() {
                    out.last_mut().unwrap().push(std::mem::take(&mut word));
                    has_word = false;
                }
                out.push(Vec::new());
            }
            (None, '|') => break,
            (None, c) => word.push(c),
        }
    }
    if has_word || !word.is_empty() {
        out.last_mut().unwrap().push(word);
    }
    out.into_iter()
        .map(|mut c| {
            // Leading environment assignments.
            while c
                .first()
                .is_some_and(|w| w.contains('=') && !w.starts_with('-'))
            {
                c.remove(0);
            }
            c
        })
        .filter(|c| !c.is_empty())
        .collect()
}

/// Shell lines of the docs' `sh` blocks, with the file and line they are on.
fn shell_lines() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut in_sh = false;
        let mut fenced = false;
        for (n, line) in text.lines().enumerate() {
            let t = line.trim_start();
            if let Some(info) = t.strip_prefix("```") {
                if fenced {
                    fenced = false;
                    in_sh = false;
                } else {
                    fenced = true;
                    in_sh = matches!(info.trim(), "sh" | "bash" | "shell" | "console");
                }
                continue;
            }
            if in_sh {
                let cmd = t.strip_prefix("$ ").unwrap_or(t);
                if !cmd.is_empty() && !cmd.starts_with('#') {
                    let rel = file
                        .strip_prefix(root())
                        .unwrap_or(&file)
                        .display()
                        .to_string();
                    out.push((format!("{rel}:{}", n + 1), cmd.to_string()));
                }
            }
        }
    }
    out
}

/// Runs one of our binaries with the command's arguments and `--help`.
fn flags_accepted(binary: &str, args: &[String]) -> Result<(), String> {
    let path = stamp_tests::proxy::binary(binary).map_err(|e| e.to_string())?;
    let out = Command::new(path)
        .args(args)
        .arg("--help")
        .env_remove("STAMP_SERVER")
        .env_remove("STAMP_TOKEN")
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn workspace_packages() -> BTreeSet<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// The directory of a workspace package.
fn package_dir(name: &str) -> PathBuf {
    let r = root();
    match name {
        "stamp-cli" => r.join("cli"),
        "stamp-benches" => r.join("benches"),
        "stamp-tests" => r.join("tests"),
        other => r.join("proxy").join(other),
    }
}

/// What is wrong with one command, if anything we can check is.
fn check(cmd: &[String], packages: &BTreeSet<String>) -> Result<(), String> {
    let (program, args) = cmd.split_first().unwrap();
    let program = program.as_str();
    match program {
        "stamp" | "target/release/stamp" | "target/debug/stamp" => flags_accepted("stamp", args),
        "npx" | "yarn" if args.first().is_some_and(|a| a == "ticket-stamp") => {
            flags_accepted("stamp", &args[1..])
        }
        "stamp-proxy" | "target/release/stamp-proxy" => flags_accepted("stamp-proxy", args),
        "target/release/stamp-load" => flags_accepted("stamp-load", args),
        "cargo" => {
            let mut pkg = None;
            let mut example = None;
            let mut bench = None;
            let mut it = args.iter();
            let sub = it.next().map(String::as_str).unwrap_or("");
            let mut rest = Vec::new();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "-p" | "--package" => pkg = it.next().cloned(),
                    "--example" => example = it.next().cloned(),
                    "--bench" => bench = it.next().cloned(),
                    "--" => {
                        rest = it.cloned().collect();
                        break;
                    }
                    _ => {}
                }
            }
            if let Some(p) = &pkg {
                if !packages.contains(p) {
                    return Err(format!("no package {p} in the workspace"));
                }
            }
            let dir = pkg.as_deref().map(package_dir);
            if let (Some(e), Some(d)) = (&example, &dir) {
                let file = d.join("examples").join(format!("{e}.rs"));
                let folder = d.join("examples").join(e).join("main.rs");
                if !file.exists() && !folder.exists() {
                    return Err(format!("no example {e} in {}", d.display()));
                }
            }
            if let (Some(b), Some(d)) = (&bench, &dir) {
                if !d.join("benches").join(format!("{b}.rs")).exists() {
                    return Err(format!("no bench {b} in {}", d.display()));
                }
            }
            if sub == "run" && example.is_none() {
                match pkg.as_deref() {
                    Some("stamp-proxy") => return flags_accepted("stamp-proxy", &rest),
                    Some("stamp-cli") => return flags_accepted("stamp", &rest),
                    _ => {}
                }
            }
            Ok(())
        }
        p if p.starts_with("tests/") || p.starts_with("benches/") || p.starts_with("cli/") => {
            let path = root().join(p);
            let meta = std::fs::metadata(&path).map_err(|e| format!("{p}: {e}"))?;
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o111 == 0 {
                return Err(format!("{p} is not executable"));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[test]
fn every_command_in_the_docs_runs_as_written() {
    let packages = workspace_packages();
    let lines = shell_lines();
    assert!(lines.len() > 20, "{lines:?}");
    let mut checked = 0;
    let mut wrong = Vec::new();
    for (at, line) in &lines {
        for cmd in commands(line) {
            checked += 1;
            if let Err(e) = check(&cmd, &packages) {
                wrong.push(format!("{at}: `{line}`: {}", e.trim()));
            }
        }
    }
    assert!(checked > 20);
    assert!(
        wrong.is_empty(),
        "commands that do not run as written:\n{}",
        wrong.join("\n\n")
    );
}

#[test]
fn the_checks_catch_what_they_are_for() {
    assert_eq!(
        commands("STAMP_TOKEN=x stamp TKT-1 --update --once && stamp --list # comment"),
        vec![
            vec!["stamp", "TKT-1", "--update", "--once"],
            vec!["stamp", "--list"],
        ]
    );
    assert_eq!(
        commands("stamp TKT-1 --sign-off --comment \"checked on a phone\""),
        vec![vec![
            "stamp",
            "TKT-1",
            "--sign-off",
            "--comment",
            "checked on a phone"
        ]]
    );
    let packages = workspace_packages();
    let words = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
    assert!(check(&words("stamp TKT-1 --promote"), &packages).is_ok());
    assert!(check(&words("stamp TKT-1 --promte"), &packages).is_err());
    assert!(check(&words("cargo run -p stamp-proxy -- --demo"), &packages).is_ok());
    assert!(check(&words("cargo run -p stamp-proxy -- --dmeo"), &packages).is_err());
    assert!(check(&words("cargo build -p stamp-nothing"), &packages).is_err());
    assert!(check(&words("tests/no-such-script"), &packages).is_err());
    assert!(check(&words("tests/run"), &packages).is_ok());
    let heads = anchors("# Title\n## Your app's setup\n```\n# not a heading\n```\n## Title");
    assert!(heads.contains("your-apps-setup") && heads.contains("title-1"));
    assert!(!heads.contains("not-a-heading"));
    assert_eq!(
        links("see [a](b.md#c) and `[x](y)`\n```\n[z](w)\n```"),
        vec!["b.md#c"]
    );
}

/// Test names the docs give as proof (`` `setups::a_pwa_…` ``) name a test
/// that exists: a renamed or removed test cannot leave a claim behind.
#[test]
fn every_test_the_docs_name_exists() {
    let dir = root().join("tests/tests/e2e");
    let modules: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".rs")
                .map(String::from)
        })
        .collect();
    let mut checked = 0;
    let mut missing = Vec::new();
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for span in text.split('`').skip(1).step_by(2) {
            let name = span.strip_prefix("e2e::").unwrap_or(span);
            let Some((module, test)) = name.split_once("::") else {
                continue;
            };
            let is_test_name = test.len() > 12
                && test.contains('_')
                && test
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !modules.contains(module) || !is_test_name {
                continue;
            }
            let source = std::fs::read_to_string(dir.join(format!("{module}.rs"))).unwrap();
            checked += 1;
            if !source.contains(&format!("fn {test}(")) {
                missing.push(format!("{}: {name}", file.display()));
            }
        }
    }
    assert!(checked >= 20, "only {checked} test names found in the docs");
    assert!(
        missing.is_empty(),
        "the docs name tests that do not exist:\n{}",
        missing.join("\n")
    );
}
