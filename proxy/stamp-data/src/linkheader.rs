//! A page's `Link` response header (RFC 8288) names files to fetch early,
//! as `<link>` elements in its `<head>` do: `</src/app.js>; rel=modulepreload`,
//! `</site.css>; rel=preload; as=style`. On a stamped page, a preload of a
//! file the variant replaces is pointed at the variant's file, as the same
//! `<link>` in the page would be. Left as it was, the browser fetched
//! production's copy beside the ticket's (a wasted request), and Chromium
//! reports a header's module preload as loaded by a script: the probe took
//! it for production's code that ran.

use crate::effective::Effective;
use url::Url;

/// `value` with every preload of a file `effective` replaces pointed at
/// the variant's URL (its `integrity` dropped: production's digest would
/// refuse the ticket's bytes), or `None` when nothing changes. Link values
/// it cannot read go out as they came.
pub fn rewrite(value: &str, page: &Url, effective: &Effective) -> Option<String> {
    let mut changed = false;
    let values: Vec<String> = split_outside(value, ',')
        .into_iter()
        .map(|one| match rewrite_one(one.trim(), page, effective) {
            Some(new) => {
                changed = true;
                new
            }
            None => one.trim().to_string(),
        })
        .collect();
    changed.then(|| values.join(", "))
}

/// One link-value: `<target>; param; param=value; param="quoted"`.
fn rewrite_one(value: &str, page: &Url, effective: &Effective) -> Option<String> {
    let rest = value.strip_prefix('<')?;
    let close = rest.find('>')?;
    let (target, params) = (&rest[..close], &rest[close + 1..]);
    let params = split_outside(params, ';');
    // Before the first `;` only white space may stand.
    let (lead, params) = params.split_first()?;
    if !lead.trim().is_empty() {
        return None;
    }
    // A parameter's value; `None` when absent, or a quoted string that
    // never ends.
    let param = |name: &str| {
        params
            .iter()
            .find_map(|p| {
                let (n, v) = p.split_once('=').unwrap_or((p, ""));
                n.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| unquote(v.trim()))
            })
            .flatten()
    };
    let rel = param("rel")?;
    let has = |token: &str| {
        rel.split(|c: char| c.is_ascii_whitespace())
            .any(|t| t.eq_ignore_ascii_case(token))
    };
    let destination = param("as").unwrap_or_default();
    let fetched_as_the_page_would = has("modulepreload")
        || has("stylesheet")
        || (has("preload")
            && (destination.eq_ignore_ascii_case("script")
                || destination.eq_ignore_ascii_case("style")));
    if !fetched_as_the_page_would || param("anchor").is_some() {
        return None;
    }
    // A header's target resolves against the response's URL; a `<base>`
    // in the page has no say in it.
    let location = crate::rewrite::location(page, target)?;
    let module = effective.replacement(&location)?;
    let mut out = format!("<{}>", module.url());
    for p in params {
        let name = p.split_once('=').map_or(p.as_str(), |(n, _)| n).trim();
        if !name.eq_ignore_ascii_case("integrity") {
            out.push_str("; ");
            out.push_str(p.trim());
        }
    }
    Some(out)
}

/// `s` split at every `sep` outside a `<…>` target and a quoted string.
fn split_outside(s: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let (mut angle, mut quoted, mut escaped) = (false, false, false);
    for c in s.chars() {
        if quoted {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                quoted = false;
            }
        } else if angle {
            angle = c != '>';
        } else if c == '"' {
            quoted = true;
        } else if c == '<' {
            angle = true;
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
            continue;
        }
        current.push(c);
    }
    parts.push(current);
    parts
}

/// A parameter's value: a token as it is, a quoted string without its
/// quotes and escapes; `None` for a quoted string that never ends.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return Some(v.to_string());
    };
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn effective() -> std::sync::Arc<Effective> {
        crate::rewrite::tests::eff(&["/src/a.js", "/src/site.css", "https://cdn.example/lib/x.js"])
    }

    fn url_of(e: &Effective, path: &str) -> String {
        e.replacement(path).unwrap().url()
    }

    #[test]
    fn preloads_of_replaced_files_point_at_the_variants() {
        let e = effective();
        let page = Url::parse("https://shop.example/deep/page").unwrap();
        let a = url_of(&e, "/src/a.js");
        let css = url_of(&e, "/src/site.css");
        let x = url_of(&e, "https://cdn.example/lib/x.js");
        for (value, want) in [
            (
                "</src/a.js>; rel=modulepreload".to_string(),
                Some(format!("<{a}>; rel=modulepreload")),
            ),
            (
                "<../src/a.js?v=3>;rel=\"preload\";as=script;integrity=\"sha384-x\"".into(),
                Some(format!("<{a}>; rel=\"preload\"; as=script")),
            ),
            (
                "</src/site.css>; rel=preload; as=style, </other.css>; rel=preload; as=style"
                    .into(),
                Some(format!(
                    "<{css}>; rel=preload; as=style, </other.css>; rel=preload; as=style"
                )),
            ),
            (
                "<https://cdn.example/lib/x.js>; rel=\"preload modulepreload\"".into(),
                Some(format!("<{x}>; rel=\"preload modulepreload\"")),
            ),
            (
                "</src/site.css>; REL=Stylesheet".into(),
                Some(format!("<{css}>; REL=Stylesheet")),
            ),
            // What the page does not fetch as a script or stylesheet, or
            // not now: left alone (a fetch of the file at its own URL is
            // answered with the ticket's by the proxy).
            ("</src/a.js>; rel=preload; as=fetch".into(), None),
            ("</src/a.js>; rel=prefetch".into(), None),
            ("</src/a.js>; rel=preconnect".into(), None),
            ("</src/a.js>; rel=modulepreload; anchor=\"#x\"".into(), None),
            ("</src/b.js>; rel=modulepreload".into(), None),
            (
                "<https://other.example/src/a.js>; rel=modulepreload".into(),
                None,
            ),
        ] {
            assert_eq!(rewrite(&value, &page, &e), want, "{value}");
        }
    }

    #[test]
    fn values_it_cannot_read_go_out_as_they_came() {
        let e = effective();
        let page = Url::parse("https://shop.example/").unwrap();
        let a = url_of(&e, "/src/a.js");
        for value in [
            "",
            ",,,",
            "/src/a.js; rel=modulepreload",
            "</src/a.js; rel=modulepreload",
            "</src/a.js> x; rel=modulepreload",
            "</src/a.js>; title=\"a, b; rel=modulepreload\"",
            "</src/a.js>; rel=\"modulepreload",
            "<javascript:alert(1)>; rel=modulepreload",
            "<data:text/javascript,1>; rel=modulepreload",
        ] {
            assert_eq!(rewrite(value, &page, &e), None, "{value}");
        }
        // A comma or semicolon inside a quoted string or a target does not
        // split; the other values keep their text.
        let value =
            "</x;y,z>; rel=preload; as=script; title=\"a,b\", </src/a.js>; rel=modulepreload";
        assert_eq!(
            rewrite(value, &page, &e).unwrap(),
            format!("</x;y,z>; rel=preload; as=script; title=\"a,b\", <{a}>; rel=modulepreload")
        );
        assert_eq!(unquote("\"a\\\"b\"").as_deref(), Some("a\"b"));
        assert_eq!(unquote("\"ab"), None);
    }
}
