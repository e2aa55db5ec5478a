//! The API's route table: every path and method under `/__stamp/api/v1/`,
//! as data. The router dispatches through it and nothing else, so the
//! published description (`proxy/stamp-control/openapi.json`, served at
//! `GET openapi.json`), which a test keeps equal to this table, cannot
//! drift from what the proxy answers.

use stamp_model::lifecycle::Transition;

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ListTickets,
    GetTicket,
    Setup,
    Check,
    Diff,
    ImportMap,
    Upload,
    DeleteModule,
    Move(Transition),
    Rollout,
    SignOff,
    WithdrawSignOff,
    RevokeLinks,
    Missing,
    Adopt,
    ProductionHistory,
    ProductionRevert,
    /// The panel's server-sent events (answered by the router: a stream).
    Events,
    /// This API's OpenAPI description.
    Description,
}

/// One route: a method and a path template relative to the API's prefix.
/// `{key}` is one non-empty segment (a ticket key); `{path}` is the rest of
/// the path, slashes included (a module path). Every `GET` answers `HEAD`
/// too, without a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    /// The description's `operationId` (what generated clients call it).
    pub id: &'static str,
    pub op: Op,
}

const fn r(method: &'static str, path: &'static str, id: &'static str, op: Op) -> Route {
    Route {
        method,
        path,
        id,
        op,
    }
}

/// Every route of the API.
pub const ROUTES: &[Route] = &[
    r("GET", "tickets", "listTickets", Op::ListTickets),
    r("GET", "tickets/{key}", "getTicket", Op::GetTicket),
    r("GET", "tickets/{key}/setup", "checkSetup", Op::Setup),
    r("GET", "tickets/{key}/check", "checkMove", Op::Check),
    r("GET", "tickets/{key}/diff", "diffTicket", Op::Diff),
    r(
        "GET",
        "tickets/{key}/importmap",
        "getImportMap",
        Op::ImportMap,
    ),
    r(
        "PUT",
        "tickets/{key}/modules/{path}",
        "uploadModule",
        Op::Upload,
    ),
    r(
        "DELETE",
        "tickets/{key}/modules/{path}",
        "deleteModule",
        Op::DeleteModule,
    ),
    r(
        "POST",
        "tickets/{key}/promote",
        "promoteTicket",
        Op::Move(Transition::Promote),
    ),
    r(
        "POST",
        "tickets/{key}/revert",
        "revertTicket",
        Op::Move(Transition::Revert),
    ),
    r(
        "POST",
        "tickets/{key}/close",
        "closeTicket",
        Op::Move(Transition::Close),
    ),
    r(
        "POST",
        "tickets/{key}/reopen",
        "reopenTicket",
        Op::Move(Transition::Reopen),
    ),
    r("POST", "tickets/{key}/rollout", "stepRollout", Op::Rollout),
    r("POST", "tickets/{key}/sign-off", "signOff", Op::SignOff),
    r(
        "POST",
        "tickets/{key}/withdraw-sign-off",
        "withdrawSignOff",
        Op::WithdrawSignOff,
    ),
    r(
        "POST",
        "tickets/{key}/revoke-links",
        "revokeLinks",
        Op::RevokeLinks,
    ),
    r("POST", "modules/missing", "missingModules", Op::Missing),
    r("POST", "store/adopt", "adoptStore", Op::Adopt),
    r(
        "GET",
        "production/history",
        "productionHistory",
        Op::ProductionHistory,
    ),
    r(
        "POST",
        "production/revert",
        "revertProduction",
        Op::ProductionRevert,
    ),
    r("GET", "events", "events", Op::Events),
    r("GET", "openapi.json", "getDescription", Op::Description),
];

/// The API's OpenAPI 3.1 description, as committed next to the crate's
/// manifest (`openapi.json`).
pub const DESCRIPTION: &str = include_str!("../../../openapi.json");

/// [`DESCRIPTION`], parsed once (a unit test proves it parses).
pub fn description() -> &'static serde_json::Value {
    static PARSED: std::sync::LazyLock<serde_json::Value> =
        std::sync::LazyLock::new(|| serde_json::from_str(DESCRIPTION).unwrap_or_default());
    &PARSED
}

/// A route matched, with its parameters still as sent (percent-encoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matched<'a> {
    pub route: &'static Route,
    pub key: Option<&'a str>,
    pub path: Option<&'a str>,
}

/// Why nothing matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No route has this path.
    NotFound,
    /// Routes have this path, with these methods only.
    MethodNotAllowed(Vec<&'static str>),
}

/// The route for `method` on `rest` (the path after the API's prefix).
pub fn route<'a>(method: &str, rest: &'a str) -> Result<Matched<'a>, Miss> {
    let mut allow = Vec::new();
    for route in ROUTES {
        let Some((key, path)) = match_path(route.path, rest) else {
            continue;
        };
        if route.method == method || (method == "HEAD" && route.method == "GET") {
            return Ok(Matched { route, key, path });
        }
        allow.push(route.method);
        if route.method == "GET" {
            allow.push("HEAD");
        }
    }
    if allow.is_empty() {
        Err(Miss::NotFound)
    } else {
        Err(Miss::MethodNotAllowed(allow))
    }
}

/// Whether `rest` matches `template`; its `{key}` and `{path}` if so. A
/// path without `{path}` may end with one `/` (`tickets/` is `tickets`).
fn match_path<'a>(template: &str, rest: &'a str) -> Option<(Option<&'a str>, Option<&'a str>)> {
    let segments: Vec<&str> = rest.split('/').collect();
    let mut key = None;
    let mut offset = 0;
    let parts: Vec<&str> = template.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if *part == "{path}" {
            // The rest, raw: the handler decodes and checks it (an empty
            // one is a 400 that names the field, not a missing route).
            return (i < segments.len()).then(|| (key, Some(&rest[offset..])));
        }
        let segment = *segments.get(i)?;
        match *part {
            "{key}" if !segment.is_empty() => key = Some(segment),
            "{key}" => return None,
            literal if literal == segment => {}
            _ => return None,
        }
        offset += segment.len() + 1;
    }
    match segments.len() - parts.len() {
        0 => Some((key, None)),
        1 if segments.last() == Some(&"") => Some((key, None)),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn op(method: &str, rest: &str) -> Result<Op, Miss> {
        route(method, rest).map(|m| m.route.op)
    }

    #[test]
    fn paths_match_their_templates_only() {
        assert_eq!(op("GET", "tickets"), Ok(Op::ListTickets));
        assert_eq!(op("GET", "tickets/"), Ok(Op::ListTickets));
        assert_eq!(op("HEAD", "tickets"), Ok(Op::ListTickets));
        let m = route("GET", "tickets/TKT-1").unwrap();
        assert_eq!((m.route.op, m.key), (Op::GetTicket, Some("TKT-1")));
        let m = route("PUT", "tickets/TKT-1/modules/src/lib/a%20b.js").unwrap();
        assert_eq!(
            (m.route.op, m.key, m.path),
            (Op::Upload, Some("TKT-1"), Some("src/lib/a%20b.js"))
        );
        let m = route("DELETE", "tickets/TKT-1/modules/").unwrap();
        assert_eq!((m.route.op, m.path), (Op::DeleteModule, Some("")));
        assert_eq!(
            op("POST", "tickets/TKT-1/reopen"),
            Ok(Op::Move(Transition::Reopen))
        );
        assert_eq!(op("GET", "openapi.json"), Ok(Op::Description));
        assert_eq!(op("POST", "tickets/TKT-1/explode"), Err(Miss::NotFound));
        assert_eq!(op("GET", "tickets//setup"), Err(Miss::NotFound));
        assert_eq!(op("GET", "tickets/TKT-1/setup/x"), Err(Miss::NotFound));
        assert_eq!(op("PUT", "tickets/TKT-1/modules"), Err(Miss::NotFound));
        assert_eq!(op("GET", ""), Err(Miss::NotFound));
        assert_eq!(
            op("PATCH", "tickets/TKT-1"),
            Err(Miss::MethodNotAllowed(vec!["GET", "HEAD"]))
        );
        assert_eq!(
            op("GET", "tickets/TKT-1/modules/a.js"),
            Err(Miss::MethodNotAllowed(vec!["PUT", "DELETE"]))
        );
        assert_eq!(
            op("GET", "tickets/TKT-1/promote"),
            Err(Miss::MethodNotAllowed(vec!["POST"]))
        );
    }

    #[test]
    fn the_description_parses() {
        let d: serde_json::Value = serde_json::from_str(DESCRIPTION).unwrap();
        assert_eq!(d["openapi"], "3.1.0");
        assert_eq!(description(), &d);
    }

    #[test]
    fn every_route_is_reachable_and_unique() {
        for (i, a) in ROUTES.iter().enumerate() {
            let sample = a.path.replace("{key}", "K-1").replace("{path}", "src/a.js");
            assert_eq!(route(a.method, &sample).unwrap().route, a, "{}", a.path);
            for b in &ROUTES[i + 1..] {
                assert!(
                    (a.method, a.path) != (b.method, b.path) && a.id != b.id && a.op != b.op,
                    "{a:?} and {b:?}"
                );
            }
        }
    }
}
