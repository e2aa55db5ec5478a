//! The tokenizer that forwards what follows `<body>` untouched: lol_html's
//! own states for HTML content (data, tags and their attributes, comments,
//! raw text), enough to find every start tag a stamping handler could act
//! on, at memchr speed between them. It never rewrites: it only says where
//! a construct begins that lol_html must read (a script, a link, a meta
//! policy, another `<body>`), or from where lol_html must read the rest of
//! the page (doctypes, `<plaintext>`, `<base>`, a start tag
//! whose state lol_html and the specification disagree on). A `<template>`
//! is read as any element (its content is tokenized as HTML; only what
//! lol_html's handler counts differs, and a start inside one is lol_html's
//! to read, after the replay that opens it). SVG and MathML
//! it reads itself, with lol_html's own namespace rules (see [`Ns`]): a
//! start in foreign content, or any construct it is unsure of there, leaves
//! the rest to lol_html. It is handed over only in the HTML namespace.

/// The first `needle` in `hay`. Most spans between two bytes the
/// tokenizer stops at are short (a tag every 20 bytes or so, values of a
/// few letters), where memchr's setup costs more than the search: the
/// first 32 bytes are searched a word at a time, the rest by memchr.
#[inline]
fn find(needle: u8, hay: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let pattern = ONES * u64::from(needle);
    let mut k = 0;
    while k + 8 <= hay.len().min(32) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&hay[k..k + 8]);
        let x = u64::from_le_bytes(word) ^ pattern;
        // A zero byte of `x` is a match. Borrows only run upwards, so the
        // lowest bit set is the first match exactly.
        let zeros = x.wrapping_sub(ONES) & !x & HIGHS;
        if zeros != 0 {
            return Some(k + zeros.trailing_zeros() as usize / 8);
        }
        k += 8;
    }
    memchr::memchr(needle, &hay[k..]).map(|at| k + at)
}

/// ASCII whitespace as lol_html's tokenizer reads it (`\r` included: it
/// does not normalise newlines first).
fn ws(b: u8) -> bool {
    matches!(b, b' ' | b'\n' | b'\r' | b'\t' | 0x0C)
}

/// The start tags the tokenizer tells apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Name {
    Script,
    Link,
    Meta,
    Body,
    /// Changes how everything after it is read, or makes handlers ignore
    /// what is inside: lol_html reads the rest.
    Hard,
    /// `<svg>`, `<math>`: enters foreign content (see [`Ns`]).
    Foreign,
    /// Raw text until its own end tag (`style`, `textarea`, …).
    Raw(&'static [u8]),
    /// One of lol_html's void elements: never on its stack of open elements.
    Void,
    Other,
}

/// Classifies a start tag's name (any case), in one match: this runs on
/// every tag of the page after `<body>`.
fn classify(name: &[u8]) -> Name {
    let mut lower = [0u8; 12];
    if name.len() > lower.len() {
        return Name::Other;
    }
    for (l, b) in lower.iter_mut().zip(name) {
        *l = b.to_ascii_lowercase();
    }
    match &lower[..name.len()] {
        b"script" => Name::Script,
        b"link" => Name::Link,
        b"meta" => Name::Meta,
        b"body" => Name::Body,
        // `base`: what later relative URLs resolve against; lol_html's
        // handler must read it (rare after `<body>`, so the rest with it).
        b"svg" | b"math" => Name::Foreign,
        b"plaintext" | b"base" => Name::Hard,
        b"style" => Name::Raw(b"style"),
        b"iframe" => Name::Raw(b"iframe"),
        b"xmp" => Name::Raw(b"xmp"),
        b"noembed" => Name::Raw(b"noembed"),
        b"noframes" => Name::Raw(b"noframes"),
        b"noscript" => Name::Raw(b"noscript"),
        b"textarea" => Name::Raw(b"textarea"),
        b"title" => Name::Raw(b"title"),
        // lol_html's void elements (`link` and `meta` are too).
        b"area" | b"basefont" | b"bgsound" | b"br" | b"col" | b"embed" | b"hr" | b"img"
        | b"input" | b"keygen" | b"param" | b"source" | b"track" | b"wbr" => Name::Void,
        _ => Name::Other,
    }
}

/// What a `<` at `lt` begins.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Tag {
    /// The buffer ends before the construct does.
    More,
    /// Not markup: the `<` is text.
    Text,
    /// `<!--`: a comment whose text starts at the index.
    Comment(usize),
    /// A bogus comment (`<?…>`, `</1…>`, `<!x…>`) whose text starts at the
    /// index; it ends at the next `>`.
    Bogus(usize),
    /// `<![CDATA[`, its text from the index: a CDATA section in foreign
    /// content, a bogus comment from `lt + 2` in HTML.
    Cdata(usize),
    /// `<!doctype`: left to lol_html.
    Declaration,
    /// A start tag ending just before `end`. `quirk`: an attribute's `=`
    /// was followed by `>` (lol_html then reads data, whatever the tag).
    /// `closing`: it ends in `/>`.
    Start {
        name: Name,
        end: usize,
        name_end: usize,
        quirk: bool,
        closing: bool,
    },
    /// An end tag (or `</>`, `name_end == lt + 2`) ending just before `end`;
    /// its name ends at `name_end`.
    End { end: usize, name_end: usize },
}

/// Reads the construct at `buf[lt] == b'<'` as lol_html's tokenizer does.
pub(super) fn tag(buf: &[u8], lt: usize) -> Tag {
    let Some(&next) = buf.get(lt + 1) else {
        return Tag::More;
    };
    match next {
        b'!' => declaration(buf, lt),
        b'?' => Tag::Bogus(lt + 1),
        b'/' => match buf.get(lt + 2) {
            None => Tag::More,
            Some(b'>') => Tag::End {
                end: lt + 3,
                name_end: lt + 2,
            },
            Some(c) if c.is_ascii_alphabetic() => match attributes(buf, lt + 2) {
                Some((end, name_end, _, _)) => Tag::End { end, name_end },
                None => Tag::More,
            },
            Some(_) => Tag::Bogus(lt + 2),
        },
        c if c.is_ascii_alphabetic() => match attributes(buf, lt + 1) {
            Some((end, name_end, quirk, closing)) => Tag::Start {
                name: classify(&buf[lt + 1..name_end]),
                end,
                name_end,
                quirk,
                closing,
            },
            None => Tag::More,
        },
        _ => Tag::Text,
    }
}

/// `<!` at `lt`, as lol_html's "markup declaration open" state reads it:
/// `--`, `doctype` (any case) or `[CDATA[` (this case only), else a bogus
/// comment; `More` while the bytes so far could still be one of those.
fn declaration(buf: &[u8], lt: usize) -> Tag {
    let rest = &buf[lt + 2..];
    let is = |word: &[u8], case: bool| {
        let n = rest.len().min(word.len());
        let same = if case {
            rest[..n].eq_ignore_ascii_case(&word[..n])
        } else {
            rest[..n] == word[..n]
        };
        (same, same && n == word.len())
    };
    let (dash, comment) = is(b"--", false);
    let (doc, doctype) = is(b"doctype", true);
    let (cd, cdata) = is(b"[CDATA[", false);
    if comment {
        Tag::Comment(lt + 4)
    } else if doctype {
        Tag::Declaration
    } else if cdata {
        Tag::Cdata(lt + 9)
    } else if dash || doc || cd {
        Tag::More
    } else {
        Tag::Bogus(lt + 2)
    }
}

/// Byte classes for the runs `attributes` skips: a set bit stops the run
/// of the state it names.
const STOP_NAME: u8 = 1;
const STOP_ATTR_NAME: u8 = 2;
const STOP_UNQUOTED: u8 = 4;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let ws = [b' ', b'\n', b'\r', b'\t', 0x0C];
    let mut k = 0;
    while k < ws.len() {
        t[ws[k] as usize] = STOP_NAME | STOP_ATTR_NAME | STOP_UNQUOTED;
        k += 1;
    }
    t[b'>' as usize] = STOP_NAME | STOP_ATTR_NAME | STOP_UNQUOTED;
    t[b'/' as usize] = STOP_NAME | STOP_ATTR_NAME;
    t[b'=' as usize] = STOP_ATTR_NAME;
    t
};

/// From a tag name's first letter to just past the tag's `>`: returns that
/// end, the end of the name, whether the quirk happened and whether the
/// tag is self-closing (`/>`); `None` when the buffer ends first.
fn attributes(buf: &[u8], name_start: usize) -> Option<(usize, usize, bool, bool)> {
    #[derive(Clone, Copy)]
    enum S {
        Name,
        BeforeAttrName,
        AttrName,
        AfterAttrName,
        BeforeValue,
        Unquoted,
        SelfClosing,
    }
    let mut s = S::Name;
    let mut name_end = None;
    let mut quirk = false;
    let mut i = name_start;
    while i < buf.len() {
        // Runs of bytes that keep the state as it is, skipped in a tight
        // loop: names and unquoted values are most of a tag's bytes.
        let stop = match s {
            S::Name => STOP_NAME,
            S::AttrName => STOP_ATTR_NAME,
            S::Unquoted => STOP_UNQUOTED,
            _ => 0,
        };
        if stop != 0 {
            while i < buf.len() && CLASS[usize::from(buf[i])] & stop == 0 {
                i += 1;
            }
            if i >= buf.len() {
                break;
            }
        }
        let b = buf[i];
        s = match s {
            S::Name => {
                if ws(b) || b == b'/' || b == b'>' {
                    name_end = Some(i);
                }
                match b {
                    b'>' => return Some((i + 1, i, quirk, false)),
                    b'/' => S::SelfClosing,
                    _ if ws(b) => S::BeforeAttrName,
                    _ => S::Name,
                }
            }
            S::BeforeAttrName => match b {
                b'/' => S::SelfClosing,
                b'>' => break,
                _ if ws(b) => S::BeforeAttrName,
                _ => S::AttrName,
            },
            S::AttrName => match b {
                b'=' => S::BeforeValue,
                b'/' => S::SelfClosing,
                b'>' => break,
                _ if ws(b) => S::AfterAttrName,
                _ => S::AttrName,
            },
            S::AfterAttrName => match b {
                b'/' => S::SelfClosing,
                b'=' => S::BeforeValue,
                b'>' => break,
                _ if ws(b) => S::AfterAttrName,
                _ => S::AttrName,
            },
            S::BeforeValue => match b {
                b'"' | b'\'' => {
                    let close = find(b, &buf[i + 1..])?;
                    i += close + 1;
                    // lol_html goes straight to "before attribute name".
                    S::BeforeAttrName
                }
                b'>' => {
                    quirk = true;
                    break;
                }
                _ if ws(b) => S::BeforeValue,
                _ => S::Unquoted,
            },
            S::Unquoted => match b {
                b'>' => break,
                _ if ws(b) => S::BeforeAttrName,
                _ => S::Unquoted,
            },
            S::SelfClosing => match b {
                b'>' => break,
                // Reconsumed in "before attribute name".
                b'/' => S::SelfClosing,
                _ if ws(b) => S::BeforeAttrName,
                _ => S::AttrName,
            },
        };
        i += 1;
    }
    if i >= buf.len() {
        return None;
    }
    let closing = matches!(s, S::SelfClosing);
    Some((i + 1, name_end.unwrap_or(i), quirk, closing))
}

/// The attributes a stamping handler reads, of a start tag [`tag`] read
/// whole: each the first of its name in any case, as lol_html's
/// `get_attribute` finds it, with its value as lol_html gives it (quotes
/// off, character references as they are); `Some(b"")` for a name with no
/// value.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Attrs<'a> {
    pub ty: Option<&'a [u8]>,
    pub src: Option<&'a [u8]>,
    pub href: Option<&'a [u8]>,
    pub rel: Option<&'a [u8]>,
    pub http_equiv: Option<&'a [u8]>,
}

impl<'a> Attrs<'a> {
    /// The attributes of the tag in `buf` whose name ends at `name_end` and
    /// which ends just before `end` (its `>` at `end - 1`), split as
    /// lol_html's tokenizer splits them: `/` and whitespace part them, a
    /// name runs to whitespace, `/`, `=` (its first byte may be `=`), a
    /// quoted value to its quote, an unquoted one to whitespace.
    pub fn of(buf: &'a [u8], name_end: usize, end: usize) -> Attrs<'a> {
        let tag = &buf[..end.saturating_sub(1).max(name_end)];
        let n = tag.len();
        let mut found = Attrs::default();
        let mut i = name_end;
        loop {
            while i < n && (ws(tag[i]) || tag[i] == b'/') {
                i += 1;
            }
            if i >= n {
                return found;
            }
            let start = i;
            i += 1;
            while i < n && !(ws(tag[i]) || tag[i] == b'/' || tag[i] == b'=') {
                i += 1;
            }
            let name = &tag[start..i];
            let mut j = i;
            while j < n && ws(tag[j]) {
                j += 1;
            }
            let value: &'a [u8] = if j < n && tag[j] == b'=' {
                j += 1;
                while j < n && ws(tag[j]) {
                    j += 1;
                }
                match tag.get(j) {
                    Some(&q) if q == b'"' || q == b'\'' => {
                        let close = find(q, &tag[j + 1..]).map_or(n, |k| j + 1 + k);
                        i = (close + 1).min(n);
                        &tag[j + 1..close]
                    }
                    _ => {
                        let mut k = j;
                        while k < n && !ws(tag[k]) {
                            k += 1;
                        }
                        i = k;
                        &tag[j..k]
                    }
                }
            } else {
                i = j;
                b""
            };
            let slot = match name.len() {
                3 if name.eq_ignore_ascii_case(b"src") => &mut found.src,
                3 if name.eq_ignore_ascii_case(b"rel") => &mut found.rel,
                4 if name.eq_ignore_ascii_case(b"type") => &mut found.ty,
                4 if name.eq_ignore_ascii_case(b"href") => &mut found.href,
                10 if name.eq_ignore_ascii_case(b"http-equiv") => &mut found.http_equiv,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
    }
}

/// Where the text of a raw-text element (or a script) ends: the `<` of its
/// own end tag, and just past that end tag's `>`.
pub(super) enum RawEnd {
    /// Ends at `(lt, end)`.
    At(usize),
    /// The buffer may end inside its end tag, which starts at the index
    /// (everything before it is text).
    More(usize),
    /// Not found in the buffer: all of it is text.
    Text,
    /// A script with `<!` in it: its escaped states are left to lol_html.
    Escaped,
}

/// Finds the end tag `</name` (any case) that ends raw text in
/// `buf[from..]`; `script`: `<!` anywhere before it gives up.
pub(super) fn raw_end(buf: &[u8], from: usize, name: &[u8], script: bool) -> RawEnd {
    let mut i = from;
    while let Some(at) = find(b'<', &buf[i..]) {
        let lt = i + at;
        let rest = &buf[lt + 1..];
        match rest.first() {
            None => return RawEnd::More(lt),
            Some(b'!') if script => return RawEnd::Escaped,
            Some(b'/') => {}
            Some(_) => {
                i = lt + 1;
                continue;
            }
        }
        let letters = &rest[1..];
        let seen = letters.len().min(name.len());
        if !letters[..seen].eq_ignore_ascii_case(&name[..seen]) {
            i = lt + 1;
            continue;
        }
        let Some(&after) = letters.get(name.len()) else {
            return RawEnd::More(lt);
        };
        if after == b'/' || after == b'>' || ws(after) {
            return match attributes(buf, lt + 2) {
                Some((end, _, _, _)) => RawEnd::At(end),
                None => RawEnd::More(lt),
            };
        }
        i = lt + 1;
    }
    RawEnd::Text
}

/// Where the reading is between two calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    Data,
    /// Inside a comment, in one of lol_html's comment states.
    Comment(Dash),
    Bogus,
    /// Inside a CDATA section (foreign content), until `]]>`.
    Cdata,
    Raw(&'static [u8]),
}

/// lol_html's comment states after `<!--`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dash {
    Start,
    StartHyphen,
    Text,
    EndHyphen,
    End,
    EndBang,
}

/// What [`Skim::scan`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// Everything may be forwarded.
    Nothing,
    /// Forward up to the index; the rest starts a construct not yet whole
    /// (keep it, and scan it again with what comes next).
    Held(usize),
    /// Forward up to `lt`; lol_html reads the start tag `lt..end` (and a
    /// script's text and end tag after it), then this tokenizer again.
    Tag { lt: usize, end: usize, name: Name },
    /// Forward up to the index; lol_html reads everything from there.
    Rest(usize),
}

/// A namespace on lol_html's stack of them: its tree builder simulator's,
/// mirrored rule for rule (lol_html 3, `tree_builder_simulator`), since it
/// decides how lol_html reads what follows: raw text (`<style>`, a
/// script's text) only in HTML, CDATA sections only outside it. Its rules
/// are not quite the specification's: `<svg/>` enters SVG as `<svg>` does,
/// an HTML tag that leaves foreign content leaves one level, and `</p>` or
/// `</br>` leave it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ns {
    Html,
    Svg,
    MathMl,
}

/// lol_html's tag-name hash (`LocalNameHash`): letters in any case and
/// the digits 1 to 6, as many as 64 bits hold; `None` for any other name,
/// which lol_html then never takes for a known tag.
fn name_hash(name: &[u8]) -> Option<u64> {
    let mut h = 0u64;
    for &c in name {
        if h >> 59 != 0 {
            return None;
        }
        h = match c {
            b'a'..=b'z' | b'A'..=b'Z' => (h << 5) | ((u64::from(c) & 0x1F) + 5),
            b'1'..=b'6' => (h << 5) | ((u64::from(c) & 0x0F) - 1),
            _ => return None,
        };
    }
    Some(h)
}

/// Whether `name` is one of `names` (lowercase) as lol_html compares tag
/// names: by their hashes.
fn is_one_of(name: &[u8], names: &[&[u8]]) -> bool {
    name_hash(name).is_some_and(|h| names.iter().any(|n| name_hash(n) == Some(h)))
}

/// HTML start tags that leave foreign content (lol_html's list).
const LEAVE_FOREIGN: &[&[u8]] = &[
    b"b",
    b"big",
    b"blockquote",
    b"body",
    b"br",
    b"center",
    b"code",
    b"dd",
    b"div",
    b"dl",
    b"dt",
    b"em",
    b"embed",
    b"h1",
    b"h2",
    b"h3",
    b"h4",
    b"h5",
    b"h6",
    b"head",
    b"hr",
    b"i",
    b"img",
    b"li",
    b"listing",
    b"menu",
    b"meta",
    b"nobr",
    b"ol",
    b"p",
    b"pre",
    b"ruby",
    b"s",
    b"small",
    b"span",
    b"strong",
    b"strike",
    b"sub",
    b"sup",
    b"table",
    b"tt",
    b"u",
    b"ul",
    b"var",
];
/// SVG elements whose content is HTML.
const SVG_HTML_POINTS: &[&[u8]] = &[b"desc", b"title", b"foreignobject"];
/// MathML elements whose content is HTML text.
const MATH_TEXT_POINTS: &[&[u8]] = &[b"mi", b"mo", b"mn", b"ms", b"mtext"];

/// What a start tag in foreign content does to the namespaces.
enum Foreign {
    /// Nothing.
    Stay,
    Enter(Ns),
    Leave,
    /// Decided by its attributes (`<font color>`, `<annotation-xml
    /// encoding>`): left to lol_html.
    Unsure,
}

/// Most elements opened between two reads by lol_html; more, it reads on.
/// lol_html charges its stack of open elements to the memory budget by
/// the deepest it has been, and elements opened and closed here never
/// reach it: the bound keeps what the whole-page rewriter would have
/// charged for them small (a budget of a few KiB can still tell, and then
/// early exit stamps what the whole-page read gave up on; at the default
/// 8 MiB it takes a contrived page).
const MAX_OPEN: usize = 512;
/// Longest replay; longer, lol_html reads on.
const MAX_REPLAY: usize = 16 * 1024;

/// The tokenizer's state across chunks.
#[derive(Debug, Clone)]
pub(super) struct Skim {
    pub mode: Mode,
    /// Whether `<meta>` has a handler (a page's policy gets the proxy's nonces).
    pub meta: bool,
    /// What lol_html's stack of open elements went through since it last
    /// read: bare start and end tags (names as written), given to it
    /// (output discarded) before it reads again, so that its end tags close
    /// what they close in the whole-page rewriter. Kept short: an element
    /// opened and closed here leaves nothing.
    pub replay: Vec<u8>,
    /// Elements opened here and still open: where its tag starts in
    /// `replay` (its name follows the `<`) and the name's length. No
    /// allocation per element: names live in `replay`.
    open: Vec<(u32, u8)>,
    /// `replay` up to here holds an end tag that may have closed elements
    /// lol_html had open: what it closed is not known, so it stays.
    floor: usize,
    /// lol_html's namespaces, innermost last; never empty.
    ns: Vec<Ns>,
    /// Foreign content came since lol_html last read: `replay` then holds
    /// every tag read since as it came, attributes and all, not only what
    /// is left open, because lol_html's namespace rules depend on the whole
    /// sequence (`<svg><b></b>` leaves SVG at `<b>`; `<svg>` alone would
    /// not). Until the run of them, from `replay[seg_start..]`, is over:
    /// back in plain HTML, every element it opened closed by it.
    verbatim: bool,
    seg_start: usize,
    /// Elements the run opened and has not closed, as `open`.
    seg: Vec<(u32, u8)>,
    /// An end tag in the run closed nothing the run opened: what it closed
    /// is not known, so the run stays in the replay.
    seg_broken: bool,
    /// Each start tag read: its name, the namespace lol_html gives it and
    /// whether lol_html pushes it on its stack (checked against lol_html).
    #[cfg(test)]
    trace: Vec<(Vec<u8>, Ns, bool)>,
}

/// The last of `open` (elements as `Skim::open` keeps them: where each
/// tag starts in `replay`, and its name's length) named `name`, any case.
fn last_named(replay: &[u8], open: &[(u32, u8)], name: &[u8]) -> Option<usize> {
    open.iter().rposition(|&(at, len)| {
        let at = at as usize + 1;
        replay[at..at + len as usize].eq_ignore_ascii_case(name)
    })
}

/// A tag name lol_html compares the way this tokenizer does.
fn plain(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
}

impl Skim {
    pub fn new(meta: bool) -> Skim {
        Skim {
            mode: Mode::Data,
            meta,
            replay: Vec::new(),
            open: Vec::new(),
            floor: 0,
            ns: vec![Ns::Html],
            verbatim: false,
            seg_start: 0,
            seg: Vec::new(),
            seg_broken: false,
            #[cfg(test)]
            trace: Vec::new(),
        }
    }

    /// The namespace lol_html reads in.
    fn current(&self) -> Ns {
        self.ns.last().copied().unwrap_or(Ns::Html)
    }

    /// Reading plain HTML, outside any foreign content.
    fn plain_html(&self) -> bool {
        self.ns.len() == 1
    }

    fn leave(&mut self) {
        if self.ns.len() > 1 {
            self.ns.pop();
        }
    }

    /// lol_html's rules for a start tag (`svg`/`math` anywhere, the rest
    /// in foreign content).
    fn foreign_start(&mut self, name: &[u8], closing: bool) -> Foreign {
        if is_one_of(name, &[b"svg"]) {
            return Foreign::Enter(Ns::Svg);
        }
        if is_one_of(name, &[b"math"]) {
            return Foreign::Enter(Ns::MathMl);
        }
        let ns = self.current();
        if ns == Ns::Html {
            return Foreign::Stay;
        }
        if is_one_of(name, LEAVE_FOREIGN) {
            return Foreign::Leave;
        }
        let point = match ns {
            Ns::Svg => is_one_of(name, SVG_HTML_POINTS),
            _ => is_one_of(name, MATH_TEXT_POINTS),
        };
        if point {
            return if closing {
                Foreign::Stay
            } else {
                Foreign::Enter(Ns::Html)
            };
        }
        let annotation = ns == Ns::MathMl
            && !closing
            && name_hash(name).is_none()
            && name.eq_ignore_ascii_case(b"annotation-xml");
        if annotation || is_one_of(name, &[b"font"]) {
            return Foreign::Unsure;
        }
        Foreign::Stay
    }

    /// lol_html's rules for an end tag.
    fn foreign_end(&mut self, name: &[u8]) {
        let ns = self.current();
        if ns == Ns::Html {
            let Some(&prev) = self.ns.len().checked_sub(2).and_then(|k| self.ns.get(k)) else {
                return;
            };
            let leaves = prev == Ns::MathMl && is_one_of(name, MATH_TEXT_POINTS)
                || prev == Ns::Svg && is_one_of(name, SVG_HTML_POINTS)
                || prev == Ns::MathMl
                    && name_hash(name).is_none()
                    && name.eq_ignore_ascii_case(b"annotation-xml");
            if leaves {
                self.leave();
            }
        } else if ns == Ns::Svg && is_one_of(name, &[b"svg"])
            || ns == Ns::MathMl && is_one_of(name, &[b"math"])
            || is_one_of(name, &[b"p", b"br"])
        {
            self.leave();
        }
    }

    /// A start tag read in foreign content (or since it came), for the
    /// replay; `pushed`: lol_html puts it on its stack of open elements.
    fn copy_start(&mut self, tag: &[u8], name_len: usize, pushed: bool) {
        if !self.verbatim {
            self.verbatim = true;
            self.seg_start = self.replay.len();
            self.seg.clear();
            self.seg_broken = false;
        }
        if pushed {
            self.seg.push((self.replay.len() as u32, name_len as u8));
        }
        self.replay.extend_from_slice(tag);
    }

    /// An end tag read since foreign content came: lol_html pops up to
    /// the nearest open element of that name.
    fn copy_end(&mut self, tag: &[u8], name: &[u8]) {
        match last_named(&self.replay, &self.seg, name) {
            Some(k) => self.seg.truncate(k),
            None => self.seg_broken = true,
        }
        self.replay.extend_from_slice(tag);
    }

    /// The run of foreign content is over and left nothing open: it has no
    /// effect on lol_html's stacks, and leaves the replay.
    fn settle(&mut self) {
        if self.verbatim && self.plain_html() && self.seg.is_empty() && !self.seg_broken {
            self.replay.truncate(self.seg_start);
            self.verbatim = false;
        }
    }

    /// The replay was given to lol_html.
    pub fn replayed(&mut self) {
        self.replay.clear();
        self.open.clear();
        self.floor = 0;
        self.verbatim = false;
        self.seg.clear();
        self.seg_broken = false;
    }

    /// A (non-void) start tag lol_html pushes on its stack.
    fn push(&mut self, name: &[u8]) {
        // Names longer than a byte holds are left to lol_html (`scan`).
        self.open.push((self.replay.len() as u32, name.len() as u8));
        self.replay.push(b'<');
        self.replay.extend_from_slice(name);
        self.replay.push(b'>');
    }

    /// An end tag: lol_html pops up to the nearest element of that name.
    fn pop(&mut self, name: &[u8]) {
        match last_named(&self.replay, &self.open, name) {
            Some(k) if self.open[k].0 as usize >= self.floor => {
                self.replay.truncate(self.open[k].0 as usize);
                self.open.truncate(k);
            }
            _ => {
                self.replay.extend_from_slice(b"</");
                self.replay.extend_from_slice(name);
                self.replay.push(b'>');
                self.floor = self.replay.len();
            }
        }
    }

    /// A start tag in foreign content, or since foreign content came (see
    /// `verbatim`): what to return, or `None` to read on after it.
    fn foreign_tag(
        &mut self,
        buf: &[u8],
        lt: usize,
        end: usize,
        name_end: usize,
        name: Name,
        closing: bool,
    ) -> Option<Found> {
        let raw = &buf[lt + 1..name_end];
        if raw.len() > usize::from(u8::MAX)
            || !plain(raw)
            || self.replay.len() >= MAX_REPLAY
            || self.open.len() + self.seg.len() >= MAX_OPEN
        {
            return Some(Found::Rest(lt));
        }
        let start = match name {
            Name::Hard => return Some(Found::Rest(lt)),
            // A start in plain HTML: lol_html reads it after the replay.
            // In foreign content (a `<meta>` there leaves it): the rest.
            Name::Script | Name::Link | Name::Body => true,
            Name::Meta => self.meta || !self.plain_html(),
            _ => false,
        };
        if start {
            return Some(if self.plain_html() {
                Found::Tag { lt, end, name }
            } else {
                Found::Rest(lt)
            });
        }
        let html = self.current() == Ns::Html;
        match self.foreign_start(raw, closing) {
            Foreign::Unsure => return Some(Found::Rest(lt)),
            Foreign::Enter(ns) => self.ns.push(ns),
            Foreign::Leave => self.leave(),
            Foreign::Stay => {}
        }
        // lol_html's stack directive, in the namespace after the tag: in
        // HTML, all but void elements; in foreign content, all but
        // self-closing ones.
        let void = matches!(name, Name::Void | Name::Meta);
        let pushed = if self.current() == Ns::Html {
            !void
        } else {
            !closing
        };
        #[cfg(test)]
        self.trace
            .push((raw.to_ascii_lowercase(), self.current(), pushed));
        // An HTML void element in HTML changes neither lol_html's stack nor
        // its namespaces: not replayed. Everything else is, as it came.
        if !(html && void && self.current() == Ns::Html) {
            self.copy_start(&buf[lt..end], raw.len(), pushed);
        }
        if let (true, Name::Raw(raw)) = (html, name) {
            self.mode = Mode::Raw(raw);
        }
        self.settle();
        None
    }

    /// Reads `buf` from the current mode until something for lol_html.
    pub fn scan(&mut self, buf: &[u8]) -> Found {
        let mut i = 0;
        loop {
            match self.mode {
                Mode::Data => {
                    let Some(at) = find(b'<', &buf[i..]) else {
                        return Found::Nothing;
                    };
                    let lt = i + at;
                    match tag(buf, lt) {
                        Tag::More => return Found::Held(lt),
                        Tag::Text => i = lt + 1,
                        Tag::Comment(from) => {
                            self.mode = Mode::Comment(Dash::Start);
                            i = from;
                        }
                        Tag::Bogus(from) => {
                            self.mode = Mode::Bogus;
                            i = from;
                        }
                        Tag::Declaration => return Found::Rest(lt),
                        Tag::Cdata(from) if self.current() != Ns::Html => {
                            self.mode = Mode::Cdata;
                            i = from;
                        }
                        Tag::Cdata(_) => {
                            self.mode = Mode::Bogus;
                            i = lt + 2;
                        }
                        Tag::End { end, name_end } => {
                            let name = &buf[(lt + 2).min(name_end)..name_end];
                            if !name.is_empty() && !plain(name) || self.replay.len() >= MAX_REPLAY {
                                return Found::Rest(lt);
                            }
                            if !name.is_empty() {
                                if self.verbatim {
                                    self.copy_end(&buf[lt..end], name);
                                } else {
                                    self.pop(name);
                                }
                                self.foreign_end(name);
                                self.settle();
                            }
                            i = end;
                        }
                        Tag::Start { quirk: true, .. } => return Found::Rest(lt),
                        Tag::Start {
                            name,
                            end,
                            name_end,
                            closing,
                            ..
                        } if name == Name::Foreign || self.verbatim => {
                            if let Some(found) =
                                self.foreign_tag(buf, lt, end, name_end, name, closing)
                            {
                                return found;
                            }
                            i = end;
                        }
                        Tag::Start {
                            name,
                            end,
                            name_end,
                            ..
                        } => match name {
                            Name::Script | Name::Link | Name::Body => {
                                return Found::Tag { lt, end, name }
                            }
                            Name::Meta if self.meta => return Found::Tag { lt, end, name },
                            Name::Hard | Name::Foreign => return Found::Rest(lt),
                            Name::Meta | Name::Void => {
                                #[cfg(test)]
                                self.trace.push((
                                    buf[lt + 1..name_end].to_ascii_lowercase(),
                                    Ns::Html,
                                    false,
                                ));
                                i = end;
                            }
                            _ if name_end - lt - 1 > usize::from(u8::MAX)
                                || !plain(&buf[lt + 1..name_end])
                                || self.open.len() >= MAX_OPEN
                                || self.replay.len() >= MAX_REPLAY =>
                            {
                                return Found::Rest(lt)
                            }
                            Name::Raw(raw) => {
                                #[cfg(test)]
                                self.trace.push((
                                    buf[lt + 1..name_end].to_ascii_lowercase(),
                                    Ns::Html,
                                    true,
                                ));
                                self.push(&buf[lt + 1..name_end]);
                                self.mode = Mode::Raw(raw);
                                i = end;
                            }
                            Name::Other => {
                                #[cfg(test)]
                                self.trace.push((
                                    buf[lt + 1..name_end].to_ascii_lowercase(),
                                    Ns::Html,
                                    true,
                                ));
                                self.push(&buf[lt + 1..name_end]);
                                i = end;
                            }
                        },
                    }
                }
                Mode::Cdata => match memchr::memmem::find(&buf[i..], b"]]>") {
                    Some(at) => {
                        self.mode = Mode::Data;
                        i += at + 3;
                    }
                    // The last bytes may begin its end: scanned again with
                    // what comes next.
                    None if buf.ends_with(b"]]") && buf.len() - 2 >= i => {
                        return Found::Held(buf.len() - 2)
                    }
                    None if buf.ends_with(b"]") && buf.len() > i => {
                        return Found::Held(buf.len() - 1)
                    }
                    None => return Found::Nothing,
                },
                Mode::Bogus => match find(b'>', &buf[i..]) {
                    Some(at) => {
                        self.mode = Mode::Data;
                        i += at + 1;
                    }
                    None => return Found::Nothing,
                },
                Mode::Raw(name) => match raw_end(buf, i, name, false) {
                    RawEnd::At(end) => {
                        if self.verbatim {
                            let mut tag = b"</".to_vec();
                            tag.extend_from_slice(name);
                            tag.push(b'>');
                            self.copy_end(&tag, name);
                        } else {
                            self.pop(name);
                        }
                        self.foreign_end(name);
                        self.settle();
                        self.mode = Mode::Data;
                        i = end;
                    }
                    RawEnd::More(lt) => return Found::Held(lt),
                    RawEnd::Text | RawEnd::Escaped => return Found::Nothing,
                },
                Mode::Comment(dash) => {
                    let (next, at) = comment(dash, buf, i);
                    i = at;
                    match next {
                        Some(d) => {
                            self.mode = Mode::Comment(d);
                            return Found::Nothing;
                        }
                        None => self.mode = Mode::Data,
                    }
                }
            }
        }
    }
}

/// Runs lol_html's comment states over `buf[i..]`: `(None, after the
/// closing >)` when the comment ends, else `(Some(state), buf.len())`.
fn comment(mut d: Dash, buf: &[u8], mut i: usize) -> (Option<Dash>, usize) {
    while i < buf.len() {
        if d == Dash::Text {
            match find(b'-', &buf[i..]) {
                Some(at) => {
                    i += at + 1;
                    d = Dash::EndHyphen;
                    continue;
                }
                None => return (Some(Dash::Text), buf.len()),
            }
        }
        let b = buf[i];
        d = match (d, b) {
            (Dash::Start, b'-') => Dash::StartHyphen,
            (Dash::Start | Dash::StartHyphen | Dash::End | Dash::EndBang, b'>') => {
                return (None, i + 1)
            }
            (Dash::StartHyphen | Dash::EndHyphen | Dash::End, b'-') => Dash::End,
            (Dash::End, b'!') => Dash::EndBang,
            (Dash::EndBang, b'-') => Dash::EndHyphen,
            // Reconsumed as comment text.
            _ => {
                d = Dash::Text;
                continue;
            }
        };
        i += 1;
    }
    (Some(d), buf.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scan_all(html: &str) -> Vec<Found> {
        let mut s = Skim::new(false);
        let mut found = Vec::new();
        let mut buf = html.as_bytes();
        loop {
            let f = s.scan(buf);
            match f {
                Found::Tag { end, .. } => {
                    buf = &buf[end..];
                    found.push(f);
                }
                _ => {
                    found.push(f);
                    return found;
                }
            }
        }
    }

    #[test]
    fn find_agrees_with_memchr() {
        let hay: Vec<u8> = (0..100u8).map(|k| k.wrapping_mul(37) % 7 + b'a').collect();
        for needle in [b'a', b'b', b'g', b'z', 0x80, 0x00] {
            for from in 0..hay.len() {
                for to in from..hay.len().min(from + 45) {
                    let h = &hay[from..to];
                    assert_eq!(
                        find(needle, h),
                        memchr::memchr(needle, h),
                        "{needle} {from}..{to}"
                    );
                }
            }
        }
        let high = [0x81u8, 0x80, 0xff, 0x00, 0x80, 0x01, 0x80, 0x80, 0x7f, 0x80];
        for needle in [0x80u8, 0x00, 0x01, 0x7f, 0xff] {
            assert_eq!(find(needle, &high), memchr::memchr(needle, &high));
        }
    }

    #[test]
    fn finds_start_tags_only_where_lol_html_reads_them() {
        assert_eq!(
            scan_all("<p a='<script>'>x</p><!-- <script> --><style><script></style ><link rel=x>"),
            vec![
                Found::Tag {
                    lt: 62,
                    end: 74,
                    name: Name::Link
                },
                Found::Nothing
            ]
        );
        assert_eq!(scan_all("<svg><script>"), vec![Found::Rest(5)]);
        assert_eq!(scan_all("<div a=>x"), vec![Found::Rest(0)]);
        assert_eq!(scan_all("a <scr"), vec![Found::Held(2)]);
        assert_eq!(scan_all("<!---->x<!--->y<!-->"), vec![Found::Nothing]);
        assert_eq!(
            scan_all("<!-- a --!><link>"),
            vec![
                Found::Tag {
                    lt: 11,
                    end: 17,
                    name: Name::Link
                },
                Found::Nothing
            ]
        );
        assert_eq!(scan_all("<!doctype html>"), vec![Found::Rest(0)]);
        // Bogus comments from `<!`, and CDATA: a section in SVG, a bogus
        // comment in HTML.
        let link = |lt| Found::Tag {
            lt,
            end: lt + 6,
            name: Name::Link,
        };
        assert_eq!(
            scan_all("<!x <script>><link>"),
            vec![link(13), Found::Nothing]
        );
        assert_eq!(
            scan_all("<![CDATA[ <script> ]]><link>"),
            vec![link(22), Found::Nothing]
        );
        assert_eq!(
            scan_all("<svg><![CDATA[ <script>]>] ]]></svg><link>"),
            vec![link(36), Found::Nothing]
        );
        assert_eq!(scan_all("<svg><![CDATA[ x ]"), vec![Found::Held(17)]);
        assert_eq!(scan_all("<svg><![CDATA[ x ]]"), vec![Found::Held(17)]);
        for partial in ["<!", "<!-", "<!DOC", "<![CDAT"] {
            assert_eq!(scan_all(partial), vec![Found::Held(0)], "{partial}");
        }
        assert_eq!(
            scan_all("<![cdata[ x ]]><link>"),
            vec![link(15), Found::Nothing]
        );
    }

    #[test]
    fn the_end_of_a_script_is_its_own_end_tag() {
        let js = b"if (a </b) x('</scripty>') </SCRIPT a='>'>rest";
        match raw_end(js, 0, b"script", true) {
            RawEnd::At(end) => {
                assert!(js[..end].ends_with(b"</SCRIPT a='>'>"), "{end}");
            }
            _ => panic!("not found"),
        }
        assert!(matches!(
            raw_end(b"x <!-- </script>", 0, b"script", true),
            RawEnd::Escaped
        ));
        assert!(matches!(
            raw_end(b"x </scr", 0, b"script", true),
            RawEnd::More(2)
        ));
        assert!(matches!(
            raw_end(b"x <", 0, b"script", true),
            RawEnd::More(2)
        ));
    }

    /// Markup that enters, leaves or stays in foreign content, in lol_html's
    /// rules, with elements of every kind around it.
    const FOREIGN_VOCAB: &[&str] = &[
        "<svg>",
        "</svg>",
        "<svg/>",
        "<math>",
        "</math>",
        "<math/>",
        "<g>",
        "</g>",
        "<g/>",
        "<desc>",
        "</desc>",
        "<desc/>",
        "<title>",
        "</title>",
        "<title/>",
        "<foreignObject>",
        "</foreignObject>",
        "<foreignobject/>",
        "<mi>",
        "</mi>",
        "<mo>",
        "</mo>",
        "<mn/>",
        "<ms>",
        "</ms>",
        "<mtext>",
        "</mtext>",
        "<annotation-xml/>",
        "</annotation-xml>",
        "</font>",
        "<p>",
        "</p>",
        "<p/>",
        "</br>",
        "<br>",
        "<br/>",
        "<b>",
        "</b>",
        "<img>",
        "<img/>",
        "<div>",
        "</div>",
        "<span>",
        "</span>",
        "<table>",
        "<li>",
        "<h1>",
        "</h1>",
        "<hr/>",
        "<embed>",
        "<head>",
        "</head>",
        "<meta>",
        "<meta/>",
        "<pre>",
        "<style>",
        "</style>",
        "<style/>",
        "<textarea>",
        "</textarea>",
        "<xmp>",
        "</xmp>",
        "<iframe>",
        "</iframe>",
        "<noembed>",
        "</noembed>",
        "<noframes>",
        "</noframes>",
        "<noscript>",
        "</noscript>",
        "<a>",
        "</a>",
        "<x-y>",
        "</x-y>",
        "<h7>",
        "<abcdefghijklm>",
        "<input/>",
        "<col>",
        "<!-- <svg> -->",
        "</>",
        "</1>",
        "<?x>",
        "x",
        "<",
        "<g a='>'>",
        "<g a=b/>",
        "<g / >",
        "<desc a=\"x\"/>",
        "<mi a=b/>",
        "<mi a=b />",
        "<title a/>",
        "<DESC>",
        "<MI>",
        "<SVG>",
        "<Math>",
        "</SVG>",
        "</P>",
        "</Desc>",
        "<tt>",
        "<nobr>",
        "<listing>",
        "<menu>",
        "<strike>",
        "<var>",
        "<ruby>",
        "<center>",
        "<blockquote>",
        "<dd>",
        "<font/>",
        "</svg >",
        "</p/>",
        "</br a=b>",
        "</desc x>",
        "<svg><svg>",
        "<math><mi><svg><desc>",
        "<mglyph>",
        "<malignmark>",
        "<annotation-xml encoding=text/html/>",
        "<h6>",
        "<code>",
        "<em>",
        "<s>",
        "<u>",
        "<i>",
        "<sub>",
        "<sup>",
        "<small>",
        "<big>",
        "<dl>",
        "<dt>",
        "<ol>",
        "<ul>",
        "<textarea/>",
        "<title></title>",
        "<noscript/>",
        "<listing/>",
        "<body/>",
        "<![CDATA[ <g> ]]>",
        "<!x <g>>",
    ];

    fn ns_uri(ns: Ns) -> &'static str {
        match ns {
            Ns::Html => "http://www.w3.org/1999/xhtml",
            Ns::Svg => "http://www.w3.org/2000/svg",
            Ns::MathMl => "http://www.w3.org/1998/Math/MathML",
        }
    }

    /// Every element lol_html reads in `page`: its name, namespace and
    /// whether it can have content (is pushed on the stack).
    fn lol_html_elements(page: &str) -> Vec<(String, String, bool)> {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let s = seen.clone();
        let mut r = lol_html::HtmlRewriter::new(
            lol_html::Settings::new()
                .with_strict(false)
                .append_element_content_handler(lol_html::element!("*", move |el| {
                    s.borrow_mut().push((
                        el.tag_name().to_ascii_lowercase(),
                        el.namespace_uri().to_string(),
                        el.can_have_content(),
                    ));
                    Ok(())
                })),
            |_: &[u8]| {},
        );
        r.write(page.as_bytes()).unwrap();
        r.end().unwrap();
        let v = seen.borrow().clone();
        v
    }

    /// The tokenizer's namespaces and stack directive are lol_html's, for
    /// every start tag it reads, on random foreign-content markup (found
    /// a missing rule at once when one was taken out, in review).
    #[test]
    fn the_namespace_of_every_element_is_lol_htmls() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let rounds = std::env::var("STAMP_DIFF_ROUNDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(20_000usize);
        let mut compared = 0;
        for _ in 0..rounds {
            let mut page = String::new();
            for _ in 0..rng.random_range(1..40) {
                let v = FOREIGN_VOCAB[rng.random_range(0..FOREIGN_VOCAB.len())];
                if rng.random_bool(0.2) {
                    for c in v.chars() {
                        let up = rng.random_bool(0.5);
                        page.push(if up { c.to_ascii_uppercase() } else { c });
                    }
                } else {
                    page.push_str(v);
                }
            }
            page.push_str("<zz>");
            let mut s = Skim::new(false);
            let found = s.scan(page.as_bytes());
            let lol = lol_html_elements(&page);
            if found == Found::Nothing {
                assert_eq!(
                    s.trace.len(),
                    lol.len(),
                    "{page}: {:?} against {lol:?}",
                    s.trace
                );
            }
            for (i, (name, ns, pushed)) in s.trace.iter().enumerate() {
                let (want, want_ns, want_pushed) = &lol[i];
                let name = String::from_utf8_lossy(name);
                assert!(
                    name == *want && ns_uri(*ns) == want_ns && pushed == want_pushed,
                    "{page}: tag {i}: {name} {ns:?} {pushed}, lol_html {want} {want_ns} {want_pushed}"
                );
            }
            compared += s.trace.len();
        }
        assert!(compared > rounds * 3, "{compared} tags compared");
    }

    /// The attributes a handler reads are lol_html's, on random tags made
    /// of every way an attribute list can be written and miswritten.
    #[test]
    fn the_attributes_read_are_lol_htmls() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(31);
        let names = [
            "type",
            "TYPE",
            "src",
            "Src",
            "href",
            "rel",
            "http-equiv",
            "x",
            "=src",
            "s\0rc",
        ];
        let values = [
            "module",
            "\"a b\"",
            "'c\"d'",
            "/e.js",
            "",
            "\"\"",
            "x=y",
            "\"f'g\"h",
            "&#46;i",
            "\u{3000}j",
        ];
        let gaps = [" ", "  ", "\t", "\n", "/", " / ", "\r\n", "\u{c}", ""];
        let mut compared = 0;
        for round in 0..4000 {
            let tag = ["script", "link", "meta", "SCRIPT"][rng.random_range(0..4)];
            let mut html = format!("<{tag}");
            for _ in 0..rng.random_range(0..6) {
                html.push_str(gaps[rng.random_range(0..gaps.len())]);
                if rng.random_bool(0.2) && html.ends_with(tag) {
                    html.push(' ');
                }
                html.push_str(names[rng.random_range(0..names.len())]);
                if rng.random_bool(0.7) {
                    html.push_str(["=", " = ", "=\t"][rng.random_range(0..3)]);
                    html.push_str(values[rng.random_range(0..values.len())]);
                }
            }
            html.push_str(gaps[rng.random_range(0..gaps.len())]);
            html.push('>');
            let Tag::Start {
                end,
                name_end,
                quirk: false,
                ..
            } = tag_at(html.as_bytes())
            else {
                continue;
            };
            let ours = Attrs::of(html.as_bytes(), name_end, end);
            let text = |v: Option<&[u8]>| v.map(|b| String::from_utf8_lossy(b).into_owned());
            let got = [ours.ty, ours.src, ours.href, ours.rel, ours.http_equiv].map(text);
            let want = lol_html_attributes(&html, &["type", "src", "href", "rel", "http-equiv"]);
            let Some(want) = want else { continue };
            assert_eq!(got.to_vec(), want, "round {round}: {html:?}");
            compared += 1;
        }
        assert!(compared > 2000, "{compared} tags compared");
    }

    fn tag_at(html: &[u8]) -> Tag {
        tag(html, 0)
    }

    /// What lol_html's `get_attribute` gives for each name on the first
    /// element of `html` (`None` when it reads no element there).
    fn lol_html_attributes(html: &str, names: &[&'static str]) -> Option<Vec<Option<String>>> {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(None));
        let s = seen.clone();
        let names: Vec<&'static str> = names.to_vec();
        let mut r = lol_html::HtmlRewriter::new(
            lol_html::Settings::new()
                .with_strict(false)
                .append_element_content_handler(lol_html::element!("*", move |el| {
                    let mut s = s.borrow_mut();
                    if s.is_none() {
                        *s = Some(names.iter().map(|n| el.get_attribute(n)).collect());
                    }
                    Ok(())
                })),
            |_: &[u8]| {},
        );
        r.write(html.as_bytes()).unwrap();
        r.end().unwrap();
        let v = seen.borrow().clone();
        v
    }
}
