//! Deciding what a request is: the selection (query, cookie, share token,
//! preview pass) against the current snapshot, then the route.

use http::header;
use pingora::proxy::Session;
use stamp_model::assets;
use stamp_model::ticket::{ModuleRef, Stage};
use stamp_model::wire;

use super::ctx::{Ctx, FileState, PagePlan, Route, Selected, Sides, Variant};
use super::StampProxy;
use crate::badge::Stale;
use crate::select::{self, names, Selection, Source, View};
use crate::snapshot::Resolved;

impl StampProxy {
    /// Reads the request once: its selection into `ctx.sel`, and its route.
    pub(super) fn route(&self, session: &Session, ctx: &mut Ctx) {
        let req = session.req_header();
        let path = req.uri.path();
        let mirror = path.starts_with(assets::MIRROR_PREFIX);
        let map = path == assets::MAP_PATH;
        if path == wire::LIVE_PATH {
            // Who may follow a ticket's saves: a browser whose selection
            // (cookie, share token included) is that ticket's dev view.
            self.select(session, ctx);
            ctx.route = Route::Live;
            return;
        }
        if path == crate::probe::REPORT_PATH {
            ctx.route = Route::Report;
            return;
        }
        if path.starts_with(crate::probe::SCRIPT_PREFIX) {
            ctx.route = Route::Probe;
            return;
        }
        if path == crate::probe::LEAVE_PATH {
            ctx.route = Route::Leave;
            return;
        }
        if wire::is_reserved(path) && !mirror && !map {
            ctx.route = Route::Internal;
            return;
        }
        if req
            .headers
            .get(&names::X_FORWARDED_PROTO)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
        {
            ctx.secure = true;
        }
        let classified = self.select(session, ctx);
        // The change is this request's own link (`?dev=`, `?qa=`,
        // `?stamp=off`), not a cookie found stale; and something does
        // change: the page is now a ticket's, or a selection is cleared
        // (`?stamp=off` or a refused link without one changes nothing).
        let stamps_a_ticket = matches!(
            ctx.sel.plan,
            Some(PagePlan {
                variant: Variant::Ticket { .. },
                ..
            })
        );
        ctx.sel.linked = ctx.sel.switches
            && (classified.has_cookie || stamps_a_ticket)
            && match &classified.selection {
                Selection::Off => true,
                Selection::Ticket { source, .. } | Selection::Invalid { source, .. } => {
                    *source == Source::Query
                }
                Selection::None => false,
            };
        let get_or_head = req.method == http::Method::GET || req.method == http::Method::HEAD;
        // A ticket file the variant has at this very path.
        let here = |ctx: &Ctx| {
            ctx.sel
                .plan
                .as_ref()
                .and_then(|p| p.effective.served_at(path).cloned())
        };
        let file_here = here(ctx).filter(|_| get_or_head);
        ctx.route = if map {
            Route::Map(None)
        } else if let Some(hash) = classified.module {
            // A hot reload from a live dev page: the module this browser's
            // dev view has at the path now, whatever hash the URL still
            // names (the page's map is fixed once loaded).
            let hot = match classified.hot {
                Some(_) if ctx.sel.dev_ticket().is_some() => here(ctx),
                _ => None,
            };
            Route::Module { hash, hot }
        } else if mirror {
            Route::Mirror(file_here)
        } else if let Some(file) = file_here.clone().filter(|f| {
            from_a_worker(&req.headers)
                || (ctx.sel.dev_or_qa()
                    && (script_hiding_its_referrer(&req.headers)
                        || (loaded_by_url(&req.headers, &f.path)
                            && !crate::modules::is_javascript(&f.path))))
        }) {
            Route::Unmapped(file)
        } else if crate::modules::is_service_worker(session)
            && (ctx.sel.dev_or_qa() || ctx.sel.pending)
        {
            Route::SetAside
        } else if let Some(file) = file_here {
            Route::File(Box::new(FileState { file, body: None }))
        } else if let Some(file) = sibling(ctx, path, &req.headers, get_or_head) {
            // Production's build of a ticket's hashed file, imported by a
            // ticket page by a URL no map or `src` names (an island's
            // `component-url`): the ticket's build of it.
            Route::Unmapped(file)
        } else if (ctx.sel.plan.is_some()
            || ctx.sel.notice.is_some()
            || ctx.sel.rollout.as_ref().is_some_and(|r| r.sampled))
            && get_or_head
            && !session.is_upgrade_req()
            && select::shows_a_page(&req.headers)
            && select::may_be_html(
                path,
                req.headers.get(header::ACCEPT).map(|v| v.as_bytes()),
                req.headers
                    .get(&names::SEC_FETCH_DEST)
                    .map(|v| v.as_bytes()),
            )
        {
            Route::Page(Box::default())
        } else {
            Route::Passthrough
        };
        // A worker's script on a ticket, production's or the ticket's: the
        // worker says what it loads itself (see `probe::WORKER_REPORTER`).
        ctx.worker_reporter = req.method == http::Method::GET
            && ctx.sel.dev_or_qa()
            && matches!(ctx.route, Route::Passthrough | Route::Unmapped(_))
            && a_workers_script(&req.headers);
        // A page with a stale link's notice is this visitor's alone: never stored.
        // A page sampled for a rollout's signal carries the probe: not stored either.
        let sampled = ctx.sel.rollout.as_ref().is_some_and(|r| r.sampled);
        if ctx.sel.notice.is_none()
            && !sampled
            && self.pages.enabled()
            && req.method == http::Method::GET
        {
            if let (Some(plan), Route::Page(page)) = (&ctx.sel.plan, &mut ctx.route) {
                let version = self.snapshot.load().version;
                let key = self.page_key(session, plan, ctx.secure, &ctx.settings);
                page.cached = self.pages.get(&key, version);
                page.key = Some((key, version));
            }
        }
    }

    /// Decides the page plan, the cookie and the info header for a request.
    fn select(&self, session: &Session, ctx: &mut Ctx) -> select::Classified {
        let req = session.req_header();
        let cookies = req.headers.get_all(header::COOKIE);
        // Precomputed: no allocation per request for the name.
        let name = ctx.settings.cookie_name(ctx.secure);
        let mut classified =
            select::classify(req.uri.query(), cookies.iter().map(|v| v.as_bytes()), name);
        // (Not a value that is no ticket key, `?dev=1`: it never becomes a
        // ticket, and an app may use the name for its own.)
        ctx.sel.from_url = matches!(
            classified.selection,
            Selection::Off
                | Selection::Ticket {
                    source: Source::Query,
                    ..
                }
        );
        if classified.module.is_some() && classified.hot.is_none() {
            return classified;
        }
        // What an element loads (an image, a stylesheet, a script) or
        // another origin fetches, whose URL names a ticket (or
        // `?stamp=off`), changes nothing: any page of the site could embed
        // one, and the cookie would land with no question asked. The
        // browser's own selection stands.
        let by_url = matches!(
            classified.selection,
            Selection::Off
                | Selection::Ticket {
                    source: Source::Query,
                    ..
                }
                | Selection::Invalid {
                    source: Source::Query,
                    ..
                }
        );
        if by_url && !select::url_may_select(&req.headers) {
            classified.selection =
                select::classify(None, cookies.iter().map(|v| v.as_bytes()), name).selection;
        }
        let left = select::named_cookie(cookies.iter().map(|v| v.as_bytes()), select::LEFT_COOKIE);
        let pending =
            select::named_cookie(cookies.iter().map(|v| v.as_bytes()), select::PENDING_COOKIE);
        ctx.sel.pending = pending.is_some();
        let snap = self.snapshot.load();
        if classified.selection == Selection::None && !classified.has_cookie {
            if let Some((
                Selection::Ticket {
                    key, view, source, ..
                },
                token,
            )) = select::from_referer(&req.headers).filter(|(s, _)| match (s, left) {
                (Selection::Ticket { key, view, .. }, Some(l)) => {
                    !select::marks(l, key, *view, true)
                }
                _ => true,
            }) {
                // The link's own navigation never reached the proxy (a
                // service worker answered it), so nobody asked whether it
                // came from another site: the ticket waits for the page's
                // next load, which asks (protected previews have their gate).
                let ask = ctx.settings.cfg.selection.confirm_cross_site && self.preview.is_none();
                if !ask {
                    classified.selection = Selection::Ticket {
                        key,
                        view,
                        source,
                        token,
                    };
                } else if matches!(snap.resolve(&key, view), Resolved::Stamp { .. }) {
                    if !pending.is_some_and(|p| select::marks(p, &key, view, false)) {
                        ctx.sel
                            .set_cookie
                            .push(select::pending_cookie(&key, view, ctx.secure));
                    }
                    ctx.sel.pending = true;
                }
            }
        }
        // While tickets roll out, a production visitor's side of each comes
        // from their visitor id (minted on a navigation without one). Not
        // on a form's `POST`: one from another site (an OAuth `form_post`
        // or SAML callback, a payment's 3-D Secure return) comes without
        // the visitor's `SameSite=Lax` cookie, and a new id would replace
        // theirs for good, moving them to the other side mid-flow. Such a
        // request is on production's side, and the id stays.
        let visitor: Option<(String, bool)> = if snap.rolling.is_empty() {
            None
        } else {
            let id = select::named_cookie(
                cookies.iter().map(|v| v.as_bytes()),
                stamp_model::rollout::VISITOR_COOKIE,
            )
            .and_then(stamp_model::rollout::visitor_id);
            match id {
                Some(v) => Some((v.to_string(), false)),
                None if select::is_navigation(&req.headers)
                    && (req.method == http::Method::GET || req.method == http::Method::HEAD) =>
                {
                    Some((stamp_model::rollout::visitor_id_from(rand::random()), true))
                }
                None => None,
            }
        };
        let sampled = !snap.rolling.is_empty()
            && ctx.settings.cfg.report_sample > 0.0
            && select::shows_a_page(&req.headers)
            && rand::random::<f64>() < ctx.settings.cfg.report_sample;
        let production_side = || -> (Option<PagePlan>, Option<Sides>) {
            let plan = |effective| PagePlan {
                effective,
                variant: Variant::Overlay,
            };
            if snap.rolling.is_empty() {
                return (snap.overlay.clone().map(plan), None);
            }
            let (effective, sides) = match &visitor {
                Some((v, _)) => snap.production_for(v),
                // No id and no navigation to mint one on: production's side.
                None => (
                    snap.overlay.clone(),
                    snap.rolling
                        .iter()
                        .map(|r| (r.key.clone(), stamp_model::views::Side::Production))
                        .collect(),
                ),
            };
            (effective.map(plan), Some(Sides { sides, sampled }))
        };
        let visitor_cookie = visitor
            .as_ref()
            .filter(|(_, minted)| *minted)
            .map(|(v, _)| {
                format!(
                    "{}={v}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax{}",
                    stamp_model::rollout::VISITOR_COOKIE,
                    if ctx.secure { "; Secure" } else { "" }
                )
            });
        let host = req.headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let base = &ctx.settings.cfg.selection.cookie_name;
        let secure = ctx.secure;
        let sel = &mut ctx.sel;
        let on_production = |sel: &mut Selected| {
            let (plan, sides) = production_side();
            sel.plan = plan;
            sel.rollout = sides;
            sel.set_cookie.extend(visitor_cookie.clone());
        };
        let production = |sel: &mut Selected, reason: String, clear_cookie: bool| {
            sel.info = Some(format!("production; reason=\"{reason}\""));
            if clear_cookie {
                sel.set_cookie = select::clear_cookies(base, secure, host);
                sel.switches = true;
            }
            on_production(sel);
        };
        match &classified.selection {
            Selection::None => on_production(sel),
            Selection::Off => {
                production(sel, "selection cleared".into(), true);
                // The ticket this browser was on is the one it leaves.
                let on = select::ticket_on(cookies.iter().map(|v| v.as_bytes()), name);
                sel.set_cookie.push(select::left_cookie(
                    on.as_deref(),
                    secure,
                    ctx.settings.cfg.selection.cookie_max_age.as_secs(),
                ));
                if sel.pending {
                    sel.set_cookie
                        .push(select::clear_cookie(select::PENDING_COOKIE, secure));
                    sel.pending = false;
                }
            }
            Selection::Invalid { reason, source } => {
                let clear = classified.has_cookie || *source == Source::Cookie;
                production(sel, reason.clone(), clear);
            }
            Selection::Ticket {
                key,
                view,
                source,
                token,
            } => match snap.resolve(key, *view) {
                Resolved::Stamp { effective, stage } => {
                    if let Some(gate) = &self.preview {
                        let generation = snap.tickets.get(key).map_or(0, |t| t.share_gen);
                        // A pass signed out anywhere in the fleet opens nothing.
                        let pass = select::named_cookie(
                            req.headers
                                .get_all(header::COOKIE)
                                .iter()
                                .map(|v| v.as_bytes()),
                            stamp_model::share::PASS_COOKIE,
                        )
                        .filter(|p| {
                            stamp_model::share::pass_revocation(p)
                                .is_none_or(|(id, _)| !self.snapshot.is_revoked(&id))
                        });
                        if let Err(refusal) =
                            gate.admit(token.as_deref(), pass, key, *view, generation)
                        {
                            if gate.sign_in_helps(refusal) && select::is_navigation(&req.headers) {
                                let next = req
                                    .uri
                                    .path_and_query()
                                    .map_or("/", |pq| pq.as_str())
                                    .to_string();
                                sel.sign_in = Some(gate.login_url(&next));
                            }
                            sel.notice = ctx.settings.cfg.badge.then(|| {
                                let why = Stale::Refused(refusal.reason().to_string());
                                (key.clone(), *view, why)
                            });
                            // Going to sign in keeps the selection for the way back.
                            let clear = (classified.has_cookie || *source == Source::Cookie)
                                && sel.sign_in.is_none();
                            production(sel, refusal.reason().to_string(), clear);
                            // Either way the browser is shown production now
                            // (a pass revoked, a role taken away): the ticket's
                            // pages it fetched ahead must not show meanwhile.
                            sel.switches = true;
                            return classified;
                        }
                    }
                    // A page on another site that frames a ticket link
                    // (no preview gate) gets production, unless the visitor
                    // chose this ticket already: they never chose to run its
                    // code, and the question below cannot be asked in a
                    // frame (it refuses to be framed). Opened in its own
                    // tab, the link asks.
                    if *source == Source::Query
                        && ctx.settings.cfg.selection.confirm_cross_site
                        && self.preview.is_none()
                        && select::is_frame_navigation(&req.headers)
                        && select::from_another_site(&req.headers, host)
                        && !select::cookie_selects(
                            cookies.iter().map(|v| v.as_bytes()),
                            name,
                            key,
                            *view,
                        )
                    {
                        production(
                            sel,
                            "a page on another site framed the ticket link".into(),
                            false,
                        );
                        // Nor may the page's own requests select it, through
                        // the `Referer` that names the link.
                        sel.set_cookie.push(select::left_cookie(
                            Some(&select::mark(key, *view)),
                            secure,
                            ctx.settings.cfg.selection.cookie_max_age.as_secs(),
                        ));
                        return classified;
                    }
                    // A link from another site asks the visitor first,
                    // unless they already chose this ticket.
                    // (Protected previews need a signed link or a signed-in
                    // person already: the gate above is their question.)
                    // So does the next load of a page whose link a service
                    // worker answered (the pending cookie): where that link
                    // came from, nobody knows.
                    // A share token counts only where a preview gate checks
                    // it: without one, `&st=0` would skip the question.
                    let pending_here = pending.is_some_and(|p| select::marks(p, key, *view, false));
                    if *source == Source::Query
                        && ctx.settings.cfg.selection.confirm_cross_site
                        && self.preview.is_none()
                        && select::is_navigation(&req.headers)
                        && (select::from_another_site(&req.headers, host) || pending_here)
                        && !select::cookie_selects(
                            cookies.iter().map(|v| v.as_bytes()),
                            name,
                            key,
                            *view,
                        )
                    {
                        if pending_here {
                            // Asked now: whatever the answer, nothing waits.
                            sel.set_cookie
                                .push(select::clear_cookie(select::PENDING_COOKIE, secure));
                        }
                        sel.confirm = Some(super::confirm::Confirm {
                            key: key.clone(),
                            view: *view,
                            stage,
                        });
                        return classified;
                    }
                    if matches!(source, Source::Query | Source::Referer) {
                        sel.switches = !select::cookie_selects(
                            cookies.iter().map(|v| v.as_bytes()),
                            name,
                            key,
                            *view,
                        );
                        sel.enters = sel.switches && select::cookie_lands(&req.headers);
                        sel.set_cookie = vec![select::set_cookie(
                            name,
                            key,
                            *view,
                            token.as_deref().filter(|_| self.preview.is_some()),
                            ctx.settings.cfg.selection.cookie_max_age.as_secs(),
                            secure,
                        )];
                        if left.is_some() {
                            // A link opened on purpose: the exit is forgotten.
                            sel.set_cookie
                                .push(select::clear_cookie(select::LEFT_COOKIE, secure));
                        }
                    }
                    sel.info = Some(info(format_args!(
                        "stamping; ticket={key}; view={}; stage={stage}; overrides={}",
                        view.as_str(),
                        effective.len()
                    )));
                    sel.plan = Some(PagePlan {
                        effective,
                        variant: Variant::Ticket {
                            key: key.clone(),
                            view: *view,
                            stage,
                            own: snap
                                .tickets
                                .get(key)
                                .and_then(|t| match view {
                                    View::Dev => Some(t.dev_own.clone()),
                                    View::Qa => t.qa_own.clone(),
                                })
                                .unwrap_or_default(),
                        },
                    });
                }
                Resolved::Production(reason) => {
                    sel.notice = ctx.settings.cfg.badge.then(|| {
                        let why = match snap.tickets.get(key).map(|t| t.stage) {
                            None => Stale::Unknown,
                            Some(Stage::Closed) => Stale::Closed,
                            Some(stage) => Stale::NotInQa(stage),
                        };
                        (key.clone(), *view, why)
                    });
                    let clear = classified.has_cookie || *source == Source::Cookie;
                    production(sel, reason, clear);
                    // This link's page reached the proxy: its own requests,
                    // whose `Referer` names the link, are not those of a page
                    // a service worker answered, and must not mark it pending
                    // should the ticket open meanwhile (a reload of the link
                    // would then ask). A reload selects it by its query.
                    // (An exit already marked is kept: it may name any ticket.)
                    if *source == Source::Query
                        && left.is_none()
                        && select::is_navigation(&req.headers)
                    {
                        // As long as a pending mark would last.
                        sel.set_cookie.push(select::left_cookie(
                            Some(&select::mark(key, *view)),
                            secure,
                            select::PENDING_MAX_AGE,
                        ));
                    }
                }
            },
        }
        if let Some(PagePlan {
            variant: Variant::Overlay,
            effective,
        }) = &sel.plan
        {
            if sel.info.is_none() {
                sel.info = Some(info(format_args!(
                    "overlay; released={}; overrides={}",
                    snap.released.len(),
                    effective.len()
                )));
            }
        }
        classified
    }
}

/// The `x-ticket-stamp` value, written once into room for it (`format!`
/// guesses too small for these and grows the string on every page).
fn info(args: std::fmt::Arguments<'_>) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(96);
    let _ = out.write_fmt(args);
    out
}

/// A file a page loads by its URL, where no map and no rewrite reach: read
/// by a script with `fetch()` or XHR (`Sec-Fetch-Dest: empty`: the app's
/// data next to its code, `new URL('./strings.json', import.meta.url)`, a
/// `.wasm` beside its glue), or loaded by a stylesheet or the markup (an
/// `@import`, a `url()` image or font, an `<img>`, a stylesheet a script
/// adds, media). JavaScript fetched so is a module loader's
/// (es-module-shims), which the maps already steer.
///
/// What a browser renders itself must come with a type the proxy can name:
/// a ticket's SVG or video sent as `application/octet-stream` would show
/// nothing, so production's file goes out, and the badge says so.
/// A script this origin's own documents or workers ask for
/// (`Sec-Fetch-Dest: script`, `Sec-Fetch-Site: same-origin`): never a
/// page of another origin of the site that embeds one of this origin's
/// scripts with the visitor's cookie (it has no probe, and its cache may
/// keep an opaque answer whatever it says).
fn own_script(headers: &http::HeaderMap) -> bool {
    select::value_is(headers, &names::SEC_FETCH_DEST, b"script")
        && select::value_is(headers, &names::SEC_FETCH_SITE, b"same-origin")
}

/// [`own_script`] without a `Referer`: a worker's `importScripts` or
/// `import()` under a referrer policy that hides its script (helmet's
/// default `no-referrer`), which nothing else tells from the page's own.
/// A script that names a page as its referrer stays production's: a
/// production page this browser still shows (the back/forward cache, a
/// copy the HTTP cache kept) carries no probe to tell.
fn script_hiding_its_referrer(headers: &http::HeaderMap) -> bool {
    own_script(headers) && !headers.contains_key(header::REFERER)
}

/// The ticket's file for production's `path` on a ticket page's script
/// request, when `path` is another version of one of its hashed files
/// (see [`crate::effective::Effective::sibling_at`]).
fn sibling(
    ctx: &Ctx,
    path: &str,
    headers: &http::HeaderMap,
    get_or_head: bool,
) -> Option<ModuleRef> {
    if !(get_or_head && own_script(headers) && ctx.sel.dev_or_qa()) {
        return None;
    }
    ctx.sel.plan.as_ref()?.effective.sibling_at(path).cloned()
}

/// A dedicated or shared worker's script, or one of its static imports
/// (`Sec-Fetch-Dest: worker` or `sharedworker`); never a service worker's.
fn a_workers_script(headers: &http::HeaderMap) -> bool {
    headers.get(&names::SEC_FETCH_DEST).is_some_and(|d| {
        let d = d.as_bytes();
        d.eq_ignore_ascii_case(b"worker") || d.eq_ignore_ascii_case(b"sharedworker")
    })
}

fn loaded_by_url(headers: &http::HeaderMap, path: &str) -> bool {
    // Not `manifest`: an app installed from a ticket page would keep the
    // ticket's manifest after the visitor left it.
    const DESTS: [&[u8]; 7] = [
        b"style", b"image", b"font", b"audio", b"video", b"track", b"object",
    ];
    headers.get(&names::SEC_FETCH_DEST).is_some_and(|d| {
        let d = d.as_bytes();
        d.eq_ignore_ascii_case(b"empty")
            || (DESTS.iter().any(|k| d.eq_ignore_ascii_case(k))
                && crate::modules::content_type(path) != "application/octet-stream")
    })
}

/// A request a worker makes for its script or its imports, where no import
/// map reaches: `Sec-Fetch-Dest: worker` or `sharedworker` (a worker's script
/// and its static imports), a worklet's module and its imports
/// (`audioworklet`, `paintworklet`: worklets have no import map either), or
/// a script fetched by a script rather than by a page (a worker's
/// `importScripts` or dynamic `import()`, whose referrer is the worker's
/// script). A service worker's script is never one: ticket code must not
/// outlive its ticket.
fn from_a_worker(headers: &http::HeaderMap) -> bool {
    let dest = headers
        .get(&names::SEC_FETCH_DEST)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if a_workers_script(headers)
        || dest.eq_ignore_ascii_case(b"audioworklet")
        || dest.eq_ignore_ascii_case(b"paintworklet")
    {
        return true;
    }
    dest.eq_ignore_ascii_case(b"script")
        && headers
            .get(header::REFERER)
            .and_then(|r| r.to_str().ok())
            .and_then(|r| url::Url::parse(r).ok())
            .is_some_and(|r| {
                let p = r.path();
                p.ends_with(".js") || p.ends_with(".mjs") || p.ends_with(".cjs")
            })
}

#[cfg(test)]
mod tests {
    use super::{from_a_worker, loaded_by_url, own_script, script_hiding_its_referrer};

    /// Only this origin's own script requests; the one without a referrer
    /// is a worker's under `no-referrer` (or anything a page hides it for).
    #[test]
    fn own_scripts_are_this_origins_and_hidden_referrers_are_told() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, http::HeaderValue::from_static(v));
            }
            h
        };
        let own = h(&[
            ("sec-fetch-dest", "script"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(own_script(&own) && script_hiding_its_referrer(&own));
        let named = h(&[
            ("sec-fetch-dest", "script"),
            ("sec-fetch-site", "same-origin"),
            ("referer", "https://shop.example/cart"),
        ]);
        assert!(own_script(&named) && !script_hiding_its_referrer(&named));
        for other in [
            // Another origin of the site embedding this origin's script.
            h(&[
                ("sec-fetch-dest", "script"),
                ("sec-fetch-site", "same-site"),
            ]),
            h(&[
                ("sec-fetch-dest", "script"),
                ("sec-fetch-site", "cross-site"),
            ]),
            h(&[("sec-fetch-dest", "script")]),
            h(&[
                ("sec-fetch-dest", "empty"),
                ("sec-fetch-site", "same-origin"),
            ]),
            h(&[
                ("sec-fetch-dest", "serviceworker"),
                ("sec-fetch-site", "same-origin"),
            ]),
            h(&[]),
        ] {
            assert!(
                !own_script(&other) && !script_hiding_its_referrer(&other),
                "{other:?}"
            );
        }
    }

    fn dest(d: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(
            "sec-fetch-dest",
            d.parse().unwrap_or(http::HeaderValue::from_static("x")),
        );
        h
    }

    #[test]
    fn workers_and_worklets_are_told_by_their_destination() {
        for d in ["worker", "SharedWorker", "audioworklet", "PaintWorklet"] {
            assert!(from_a_worker(&dest(d)), "{d}");
        }
        // Not every name that ends so: a shared-storage worklet's modules
        // are not started through `Worklet.prototype.addModule`, so the
        // badge could not name it; nor a bare "worklet", nor a service worker.
        for d in [
            "sharedstorageworklet",
            "worklet",
            "serviceworker",
            "document",
            "",
            "audioworklet\0",
        ] {
            assert!(!from_a_worker(&dest(d)), "{d:?}");
        }
        assert!(!from_a_worker(&http::HeaderMap::new()));
    }

    #[test]
    fn files_loaded_by_url_are_those_a_browser_can_use() {
        assert!(
            loaded_by_url(&dest("empty"), "/src/model.glb"),
            "fetch() reads bytes"
        );
        assert!(loaded_by_url(&dest("style"), "/src/theme.css"));
        assert!(loaded_by_url(&dest("IMAGE"), "/src/logo.png"));
        assert!(loaded_by_url(&dest("font"), "/src/a.woff2"));
        // An image the proxy would send as bytes, a manifest an installed
        // app would keep, a navigation, no destination at all.
        assert!(!loaded_by_url(&dest("image"), "/src/logo.svg"));
        assert!(!loaded_by_url(&dest("manifest"), "/src/app.json"));
        assert!(!loaded_by_url(&dest("document"), "/src/a.css"));
        assert!(!loaded_by_url(&dest("script"), "/src/a.css"));
        assert!(!loaded_by_url(&http::HeaderMap::new(), "/src/a.css"));
    }
}
