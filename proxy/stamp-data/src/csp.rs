//! Content-Security-Policy handling for the import map the proxy writes.
//!
//! The proxy's `<script type="importmap">` is an inline script, so every
//! enforced policy must allow it. It is allowed by adding only what names that
//! one element (a nonce, and the hash of a freshly inserted map) and never by
//! relaxing a policy: no source or directive is removed or rewritten.
//!
//! A merged map's final text is not known when the headers leave (nor that of
//! an inserted map given a page's entry, see `rewrite::entry_key`), so the
//! hash alone cannot cover it; the nonce is what makes every case work.

use base64::Engine;
use url::Url;

/// What to do to a response's Content-Security-Policy headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CspPlan {
    /// nonce attribute value to put on the proxy's import map element (None = no nonce needed)
    pub nonce: Option<String>,
    /// the header values to send instead of the originals (same number, same order); equal to the input when unchanged
    pub policies: Vec<String>,
    pub changed: bool,
    /// when some policy cannot be satisfied without weakening it (e.g. script-src 'none'), a short human reason
    pub note: Option<String>,
}

/// Plans the header changes that let the proxy's inline import map run.
///
/// `policies`: every Content-Security-Policy header value (each may hold
/// several comma-separated policies). `inserted_hash`:
/// `importmap::csp_hash_source` of the map inserted when the page has none.
/// `fresh_nonce`: a random nonce generated for this response.
pub fn plan(policies: &[&str], inserted_hash: &str, fresh_nonce: &str) -> CspPlan {
    plan_for(Element::Script, policies, inserted_hash, fresh_nonce)
}

/// Which kind of inline element a plan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    /// `<script>`: governed by `script-src-elem`, else `script-src`, else `default-src`.
    Script,
    /// `<style>` (the badge): `style-src-elem`, else `style-src`, else `default-src`.
    Style,
}

impl Element {
    fn chain(self) -> [&'static str; 3] {
        match self {
            Element::Script => ["script-src-elem", "script-src", "default-src"],
            Element::Style => ["style-src-elem", "style-src", "default-src"],
        }
    }
}

/// [`plan`] for any inline element kind: the same rules, with the directive
/// chain that governs that element.
pub fn plan_for(
    element: Element,
    policies: &[&str],
    inserted_hash: &str,
    fresh_nonce: &str,
) -> CspPlan {
    let chain = element.chain();
    let headers = parse_headers(policies);

    // Reusing the origin's nonce keeps its headers untouched where every
    // policy already allows it. But where a policy would have to be given
    // that nonce (a second, hash-only policy), the page's own scripts that
    // carry it would pass that policy too: production blocks them, the
    // ticket page must as well. Then the element gets a fresh nonce, which
    // only it carries, added wherever it is needed.
    let origin_nonce = headers
        .iter()
        .flatten()
        .filter_map(|p| p.governing(&chain))
        .flat_map(|d| d.sources.iter().copied())
        .find_map(nonce_value);
    if let Some(n) = origin_nonce {
        let reused = plan_with_nonce(&chain, policies, &headers, inserted_hash, n);
        if !reused.added_nonce {
            return reused.plan;
        }
    }
    plan_with_nonce(&chain, policies, &headers, inserted_hash, fresh_nonce).plan
}

/// The source list of each enforced policy's `base-uri` directive (a
/// directive no other stands in for: without it, any base is allowed).
pub fn base_uri_sources(enforced: &[&str]) -> Vec<Vec<String>> {
    parse_headers(enforced)
        .iter()
        .flatten()
        .filter_map(|p| p.directives.iter().find(|d| d.name == "base-uri"))
        .map(|d| d.sources.iter().map(|s| s.to_string()).collect())
        .collect()
}

/// Whether every policy's `base-uri` lets a page on `page` use the base
/// `url`: `Some(false)` when one blocks it (the browser then keeps the
/// page's own URL), `None` when a list has sources this does not judge
/// (hosts, paths, wildcards) and none it does matches.
pub fn base_allowed(lists: &[Vec<String>], url: &Url, page: &Url) -> Option<bool> {
    let mut all = Some(true);
    for list in lists {
        let verdict = one_base_list(list, url, page);
        match verdict {
            Some(false) => return Some(false),
            None => all = None,
            Some(true) => {}
        }
    }
    all
}

fn one_base_list(list: &[String], url: &Url, page: &Url) -> Option<bool> {
    let sources: Vec<&str> = list
        .iter()
        .map(String::as_str)
        .filter(|s| !keyword_is(s, "'none'"))
        .collect();
    let mut judged = true;
    for source in &sources {
        let lower = source.to_ascii_lowercase();
        let matches = if lower == "'self'" {
            // Same origin, or the same host upgraded from http to https.
            crate::importmap::same_origin(url, page)
                || (page.scheme() == "http"
                    && url.scheme() == "https"
                    && url.host() == page.host()
                    && url.port().is_none()
                    && page.port().is_none())
        } else if let Some(scheme) = lower.strip_suffix(':').filter(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
        }) {
            url.scheme() == scheme || (scheme == "http" && url.scheme() == "https")
        } else if lower.starts_with('\'') {
            // Another keyword ('unsafe-inline', a nonce): matches no URL.
            false
        } else {
            judged = false;
            false
        };
        if matches {
            return Some(true);
        }
    }
    // An empty list, or `'none'`, allows nothing.
    judged.then_some(false)
}

/// Each header value's comma-separated policies.
fn parse_headers<'a>(policies: &[&'a str]) -> Vec<Vec<Policy<'a>>> {
    policies
        .iter()
        .map(|value| value.split(',').map(Policy::parse).collect())
        .collect()
}

/// Policies given an element whose nonce is already chosen: the `nonce`
/// (and the inserted map's hash) is added where a policy would otherwise
/// block or report the proxy's own element. Used for report-only headers
/// (so ticket views send no reports production does not) and for a page's
/// `<meta>` policy. Nothing is removed.
pub fn extend_with(
    element: Element,
    policies: &[&str],
    inserted_hash: &str,
    nonce: &str,
) -> CspPlan {
    let chain = element.chain();
    let headers = parse_headers(policies);
    plan_with_nonce(&chain, policies, &headers, inserted_hash, nonce).plan
}

struct Planned {
    plan: CspPlan,
    /// The element's nonce had to be added to some policy.
    added_nonce: bool,
}

fn plan_with_nonce(
    chain: &[&'static str; 3],
    policies: &[&str],
    headers: &[Vec<Policy<'_>>],
    inserted_hash: &str,
    element_nonce: &str,
) -> Planned {
    let element_nonce = element_nonce.to_owned();
    let nonce_source = format!("'nonce-{element_nonce}'");
    let mut added_nonce = false;

    let mut needs_nonce = false;
    let mut notes = Vec::new();
    let mut out = Vec::with_capacity(headers.len());
    for (original, header) in policies.iter().zip(headers) {
        let mut header_changed = false;
        let mut rebuilt = Vec::with_capacity(header.len());
        for policy in header {
            let Some(directive) = policy.governing(chain) else {
                rebuilt.push(policy.raw.to_owned());
                continue;
            };
            let additions = match assess(directive, &element_nonce) {
                Verdict::AlreadyAllowed => {
                    needs_nonce = true;
                    Vec::new()
                }
                Verdict::InlineAllowed => Vec::new(),
                Verdict::Impossible => {
                    notes.push(format!(
                        "{} allows no scripts, so the import map cannot run",
                        directive.name
                    ));
                    Vec::new()
                }
                Verdict::NeedsSources => {
                    needs_nonce = true;
                    let present = |s: &str| directive.sources.contains(&s);
                    added_nonce |= !present(&nonce_source);
                    [nonce_source.as_str(), inserted_hash]
                        .into_iter()
                        .filter(|s| !s.is_empty() && !present(s))
                        .collect()
                }
            };
            if additions.is_empty() {
                rebuilt.push(policy.raw.to_owned());
            } else {
                header_changed = true;
                rebuilt.push(policy.with_appended(directive.index, &additions));
            }
        }
        out.push(if header_changed {
            rebuilt.join(",")
        } else {
            (*original).to_owned()
        });
    }

    let changed = out.iter().zip(policies).any(|(new, old)| new != old);
    Planned {
        plan: CspPlan {
            nonce: needs_nonce.then_some(element_nonce),
            policies: out,
            changed,
            note: (!notes.is_empty()).then(|| notes.join("; ")),
        },
        added_nonce,
    }
}

/// CSP nonces are base64(url) text; anything else is not written into markup.
pub fn is_nonce_safe(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=_-".contains(&b))
}

/// What a page's policies become when the proxy adds its elements: the
/// import map (`script`, when the page `stamps`) and the badge's or
/// notice's style (`style`, when `styled`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PagePolicies {
    /// The enforced policies to send instead, when they changed.
    pub enforce: Option<Vec<String>>,
    /// The report-only policies to send instead, when they changed.
    pub report_only: Option<Vec<String>>,
    /// The nonce the inserted script must carry, if any.
    pub script_nonce: Option<String>,
    /// The nonce the inserted style must carry, if any.
    pub style_nonce: Option<String>,
    /// Why a policy was left as it was (logged).
    pub note: Option<String>,
}

/// Plans a page's `Content-Security-Policy` and `…-Report-Only` headers:
/// the inserted map gets the policy's nonce, or the policy gets its hash and
/// a fresh nonce; the same for the style. Nothing is ever removed, and the
/// report-only policies get the same elements, so a ticket view reports
/// nothing production would not.
pub fn page_policies(
    enforce: &[String],
    report_only: &[String],
    script_hash: Option<&str>,
    style_hash: Option<&str>,
    fresh: &str,
) -> PagePolicies {
    let mut out = PagePolicies::default();
    if !enforce.is_empty() {
        let mut current = enforce.to_vec();
        let mut changed = false;
        if let Some(hash) = script_hash {
            let refs: Vec<&str> = current.iter().map(String::as_str).collect();
            let script = plan(&refs, hash, fresh);
            out.note = script.note.clone();
            if script.changed {
                current = script.policies;
                changed = true;
            }
            out.script_nonce = script.nonce;
        }
        if let Some(hash) = style_hash {
            let refs: Vec<&str> = current.iter().map(String::as_str).collect();
            let style = plan_for(Element::Style, &refs, hash, fresh);
            if style.changed {
                current = style.policies;
                changed = true;
            }
            out.style_nonce = style.nonce;
        }
        out.enforce = changed.then_some(current);
    }
    if !report_only.is_empty() {
        let mut current = report_only.to_vec();
        let mut changed = false;
        if let Some(hash) = script_hash {
            let script_nonce = out
                .script_nonce
                .clone()
                .unwrap_or_else(|| fresh.to_string());
            let refs: Vec<&str> = report_only.iter().map(String::as_str).collect();
            let script = extend_with(Element::Script, &refs, hash, &script_nonce);
            current = script.policies;
            changed = script.changed;
            if script.nonce.is_some() {
                out.script_nonce = Some(script_nonce);
            }
        }
        if let Some(hash) = style_hash {
            let style_n = out.style_nonce.clone().unwrap_or_else(|| fresh.to_string());
            let refs: Vec<&str> = current.iter().map(String::as_str).collect();
            let style = extend_with(Element::Style, &refs, hash, &style_n);
            if style.nonce.is_some() {
                out.style_nonce = Some(style_n);
            }
            changed |= style.changed;
            current = style.policies;
        }
        out.report_only = changed.then_some(current);
    }
    out
}

/// 18 random bytes, base64: 144 bits, and no padding because 18 is a multiple of 3.
pub fn fresh_nonce() -> String {
    let bytes: [u8; 18] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One serialized policy, split the way the CSP parser splits it.
struct Policy<'a> {
    raw: &'a str,
    /// Every `;`-separated segment, verbatim, so untouched ones are re-emitted as they were.
    segments: Vec<&'a str>,
    directives: Vec<Directive<'a>>,
}

struct Directive<'a> {
    /// Index into `segments`.
    index: usize,
    /// Lower-cased.
    name: String,
    sources: Vec<&'a str>,
}

enum Verdict {
    /// The directive already lists the element's nonce.
    AlreadyAllowed,
    /// Only `'unsafe-inline'` governs; adding a nonce or hash would switch it
    /// off and break the app's own inline scripts.
    InlineAllowed,
    /// `'none'`: allowing the map would mean weakening the policy.
    Impossible,
    NeedsSources,
}

impl<'a> Policy<'a> {
    fn parse(raw: &'a str) -> Self {
        let segments: Vec<&str> = raw.split(';').collect();
        let mut directives: Vec<Directive<'a>> = Vec::new();
        for (index, segment) in segments.iter().enumerate() {
            let mut tokens = segment.split(|c: char| c.is_ascii_whitespace());
            let mut tokens = std::iter::from_fn(|| tokens.find(|t| !t.is_empty()));
            let Some(name) = tokens.next() else {
                continue;
            };
            let name = name.to_ascii_lowercase();
            // Browsers ignore a repeated directive; so must we.
            if directives.iter().any(|d| d.name == name) {
                continue;
            }
            directives.push(Directive {
                index,
                name,
                sources: tokens.collect(),
            });
        }
        Policy {
            raw,
            segments,
            directives,
        }
    }

    /// The first directive of `chain` present: the one that decides whether
    /// an inline element of that kind may run.
    fn governing(&self, chain: &[&str]) -> Option<&Directive<'a>> {
        chain
            .iter()
            .find_map(|name| self.directives.iter().find(|d| d.name == *name))
    }

    fn with_appended(&self, index: usize, additions: &[&str]) -> String {
        let mut segments: Vec<String> = self.segments.iter().map(|s| (*s).to_owned()).collect();
        if let Some(segment) = segments.get_mut(index) {
            let body = segment.trim_end_matches(|c: char| c.is_ascii_whitespace());
            let trailing = &segment[body.len()..];
            *segment = format!("{body} {}{trailing}", additions.join(" "));
        }
        segments.join(";")
    }
}

fn assess(directive: &Directive<'_>, element_nonce: &str) -> Verdict {
    let sources = &directive.sources;
    if sources
        .iter()
        .any(|s| nonce_value(s) == Some(element_nonce))
    {
        return Verdict::AlreadyAllowed;
    }
    // `'none'` only means nothing when it stands alone; an empty list means the same.
    if sources.is_empty() || (sources.len() == 1 && keyword_is(sources[0], "'none'")) {
        return Verdict::Impossible;
    }
    let has_unsafe_inline = sources.iter().any(|s| keyword_is(s, "'unsafe-inline'"));
    // Any of these makes browsers ignore 'unsafe-inline'.
    let inline_disabled = sources.iter().any(|s| {
        nonce_value(s).is_some() || is_hash_source(s) || keyword_is(s, "'strict-dynamic'")
    });
    if has_unsafe_inline && !inline_disabled {
        Verdict::InlineAllowed
    } else {
        Verdict::NeedsSources
    }
}

fn keyword_is(source: &str, keyword: &str) -> bool {
    source.eq_ignore_ascii_case(keyword)
}

/// `X` from a `'nonce-X'` source (the prefix is case-insensitive, X is not).
/// Browsers ignore a nonce that is not a CSP base64-value, so we do too; that
/// also keeps quotes and markup out of the attribute we copy it into.
fn nonce_value(source: &str) -> Option<&str> {
    let prefix = source.get(..7)?;
    if !prefix.eq_ignore_ascii_case("'nonce-") {
        return None;
    }
    let value = source.get(7..)?.strip_suffix('\'')?;
    let body = value.trim_end_matches('=');
    let valid = !body.is_empty()
        && value.len() - body.len() <= 2
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_'));
    valid.then_some(value)
}

fn is_hash_source(source: &str) -> bool {
    ["'sha256-", "'sha384-", "'sha512-"].iter().any(|prefix| {
        source
            .get(..prefix.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(prefix))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const HASH: &str = "'sha256-AAAA'";
    const FRESH: &str = "FreshNonce123";

    fn run(policies: &[&str]) -> CspPlan {
        plan(policies, HASH, FRESH)
    }

    fn unchanged(p: &CspPlan, input: &[&str]) {
        assert!(!p.changed);
        assert_eq!(p.policies, input);
    }

    #[test]
    fn no_policy_needs_nothing() {
        let p = run(&[]);
        assert_eq!(
            p,
            CspPlan {
                nonce: None,
                policies: vec![],
                changed: false,
                note: None
            }
        );
        let input = ["img-src 'self'; frame-ancestors 'none'"];
        let p = run(&input);
        unchanged(&p, &input);
        assert_eq!(p.nonce, None);
    }

    #[test]
    fn origin_nonce_is_reused_and_header_left_alone() {
        let input = ["script-src 'nonce-Origin+/9=' 'strict-dynamic'; object-src 'none'"];
        let p = run(&input);
        unchanged(&p, &input);
        assert_eq!(p.nonce.as_deref(), Some("Origin+/9="));
        assert_eq!(p.note, None);
    }

    #[test]
    fn hash_only_policy_gets_nonce_and_hash() {
        let p = run(&["script-src 'sha256-xyz'"]);
        assert!(p.changed);
        assert_eq!(
            p.policies,
            [format!("script-src 'sha256-xyz' 'nonce-{FRESH}' {HASH}")]
        );
        assert_eq!(p.nonce.as_deref(), Some(FRESH));
    }

    #[test]
    fn self_only_policy_gets_nonce_and_hash() {
        let p = run(&["default-src 'self'; script-src 'self' https://cdn.example ;img-src *"]);
        assert_eq!(
            p.policies,
            [format!(
                "default-src 'self'; script-src 'self' https://cdn.example 'nonce-{FRESH}' {HASH} ;img-src *"
            )]
        );
        assert_eq!(p.nonce.as_deref(), Some(FRESH));
    }

    #[test]
    fn unsafe_inline_only_is_left_alone() {
        let input = ["script-src 'self' 'unsafe-inline' 'unsafe-eval' https: data:"];
        let p = run(&input);
        unchanged(&p, &input);
        assert_eq!(p.nonce, None);
        assert_eq!(p.note, None);
    }

    #[test]
    fn unsafe_inline_with_hash_gets_appended() {
        let p = run(&["script-src 'unsafe-inline' 'SHA256-abc'"]);
        assert_eq!(
            p.policies,
            [format!(
                "script-src 'unsafe-inline' 'SHA256-abc' 'nonce-{FRESH}' {HASH}"
            )]
        );
        assert_eq!(p.nonce.as_deref(), Some(FRESH));
    }

    #[test]
    fn script_src_elem_governs_over_script_src() {
        let p = run(&["script-src 'self'; script-src-elem 'self' 'unsafe-inline'"]);
        assert!(!p.changed);
        assert_eq!(p.nonce, None);

        let p = run(&["script-src 'unsafe-inline'; script-src-elem 'self'"]);
        assert_eq!(
            p.policies,
            [format!(
                "script-src 'unsafe-inline'; script-src-elem 'self' 'nonce-{FRESH}' {HASH}"
            )]
        );
    }

    #[test]
    fn default_src_is_the_fallback() {
        let p = run(&["default-src 'self'; style-src 'unsafe-inline'"]);
        assert_eq!(
            p.policies,
            [format!(
                "default-src 'self' 'nonce-{FRESH}' {HASH}; style-src 'unsafe-inline'"
            )]
        );
        assert_eq!(p.nonce.as_deref(), Some(FRESH));
    }

    #[test]
    fn none_is_left_alone_with_a_note() {
        let input = ["script-src 'none'; img-src 'self'"];
        let p = run(&input);
        unchanged(&p, &input);
        assert!(p.note.as_deref().unwrap().contains("script-src"));
        assert_eq!(p.nonce, None);

        // 'none' among other sources is ignored by browsers, so it is not a dead end.
        let p = run(&["script-src 'none' 'self'"]);
        assert!(p.changed);
        assert_eq!(p.note, None);
    }

    #[test]
    fn several_policies_in_one_header_and_several_headers() {
        let input = [
            "script-src 'unsafe-inline', default-src 'self'",
            "img-src *",
            "script-src 'nonce-abc' 'strict-dynamic'",
        ];
        let p = run(&input);
        assert!(p.changed);
        assert_eq!(p.policies.len(), 3);
        // The origin's nonce (third header) must not be copied into the
        // `default-src 'self'` policy: the page's own scripts that carry it
        // would pass a policy that blocks them in production. The element
        // gets a fresh nonce, added wherever it is needed.
        assert_eq!(p.nonce.as_deref(), Some(FRESH));
        assert_eq!(
            p.policies[0],
            format!("script-src 'unsafe-inline', default-src 'self' 'nonce-{FRESH}' {HASH}")
        );
        assert!(!p.policies[0].contains("nonce-abc"), "{}", p.policies[0]);
        assert_eq!(p.policies[1], input[1]);
        assert_eq!(
            p.policies[2],
            format!("script-src 'nonce-abc' 'strict-dynamic' 'nonce-{FRESH}' {HASH}")
        );
        // One policy with the origin's nonce and nothing else to satisfy:
        // the nonce is reused and nothing changes.
        let p = run(&["script-src 'nonce-abc' 'strict-dynamic'", "img-src *"]);
        assert!(!p.changed);
        assert_eq!(p.nonce.as_deref(), Some("abc"));
    }

    #[test]
    fn report_only_policies_are_given_the_same_element() {
        let p = extend_with(
            Element::Script,
            &["script-src 'self'; report-uri /r"],
            HASH,
            "N1",
        );
        assert_eq!(
            p.policies,
            [format!(
                "script-src 'self' 'nonce-N1' {HASH}; report-uri /r"
            )]
        );
        let p = extend_with(Element::Script, &["img-src *"], HASH, "N1");
        assert!(!p.changed);
    }

    #[test]
    fn directive_names_and_keywords_are_case_insensitive() {
        let p = run(&["Script-Src 'NONCE-Kept' 'self'"]);
        assert!(!p.changed);
        assert_eq!(p.nonce.as_deref(), Some("Kept"));

        let p = run(&["DEFAULT-SRC 'self'; SCRIPT-SRC-ELEM 'Unsafe-Inline'"]);
        assert!(!p.changed);
        assert_eq!(p.nonce, None);

        let p = run(&["SCRIPT-SRC 'self'"]);
        assert_eq!(
            p.policies,
            [format!("SCRIPT-SRC 'self' 'nonce-{FRESH}' {HASH}")]
        );
    }

    #[test]
    fn strict_dynamic_without_nonce_gets_appended() {
        let p = run(&["script-src 'strict-dynamic' 'unsafe-inline' https:"]);
        assert_eq!(
            p.policies,
            [format!(
                "script-src 'strict-dynamic' 'unsafe-inline' https: 'nonce-{FRESH}' {HASH}"
            )]
        );
        assert_eq!(p.nonce.as_deref(), Some(FRESH));
    }

    #[test]
    fn present_hash_is_not_repeated_and_repeated_directives_are_ignored() {
        let p = run(&[&format!("script-src {HASH}; script-src 'unsafe-inline'")]);
        assert_eq!(
            p.policies,
            [format!(
                "script-src {HASH} 'nonce-{FRESH}'; script-src 'unsafe-inline'"
            )]
        );
    }

    #[test]
    fn malformed_origin_nonce_is_not_reused() {
        let p = run(&["script-src 'nonce-a\"b' 'nonce-' 'self'"]);
        assert_eq!(p.nonce.as_deref(), Some(FRESH));
        assert_eq!(
            p.policies,
            [format!(
                "script-src 'nonce-a\"b' 'nonce-' 'self' 'nonce-{FRESH}' {HASH}"
            )]
        );
        assert_eq!(nonce_value("'nonce-ab+/_-=='"), Some("ab+/_-=="));
        assert_eq!(nonce_value("'nonce-ab==='"), None);
        assert_eq!(nonce_value("'nonce-ab"), None);
    }

    #[test]
    fn fresh_nonces_are_long_and_distinct() {
        let a = fresh_nonce();
        assert_eq!(a.len(), 24);
        assert!(!a.contains('='));
        assert_ne!(a, fresh_nonce());
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&a)
            .unwrap();
        assert_eq!(decoded.len(), 18);
    }
}
