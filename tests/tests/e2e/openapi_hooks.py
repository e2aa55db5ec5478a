"""schemathesis hooks for the control API's contract run (tests/tests/e2e/openapi.rs).

One check of our own, `refusal_changes_nothing`: a request the API refused
(any 4xx) must leave the store as it was. Before every call the hook reads
what a change would show (every ticket's stage and version, the production
history's head, the store's epoch, and for an upload whether the store has
its body); after a refusal it reads them again and fails on any difference.
The run uses one worker, so no other request changes the store in between.
The proxy's own jobs may: the settler records a released ticket's baseline,
a rollout steps or reverts itself, gc closes stale tickets. A ticket whose
version moved is therefore explained only if every event in its history since
the refused request was sent is by one of those jobs, and there are at least
as many of them as versions it moved; anything else fails the check.

Set by the test: STAMP_API (the API's base URL) and STAMP_TOKEN (an admin token).
"""

import hashlib
import json
import os
import time
import urllib.parse
import urllib.error
import urllib.request

import schemathesis

API = os.environ["STAMP_API"].rstrip("/")
TOKEN = os.environ["STAMP_TOKEN"]
HEALTH = API.split("/__stamp/")[0] + "/__stamp/health"

# The history actors of the proxy's own jobs (stamp-control: workflow::settle,
# rollouts, workflow::gc). No token in the test is named like them.
JOBS = {"settler", "rollout", "gc"}

_before = {}


def _request(url, body=None):
    headers = {"Authorization": "Bearer " + TOKEN}
    if body is not None:
        headers["Content-Type"] = "application/json"
        body = json.dumps(body).encode()
    req = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


def _tickets():
    out = {}
    cursor = None
    while True:
        url = API + "/tickets?limit=500" + ("&cursor=" + cursor if cursor else "")
        page = _request(url)
        for t in page["tickets"]:
            out[t["key"]] = (t["stage"], t["version"])
        cursor = page.get("next")
        if not cursor:
            return out


def _production_head():
    try:
        commits = _request(API + "/production/history?limit=1")["commits"]
    except urllib.error.HTTPError as e:
        return "history: %d" % e.code
    return commits[0]["id"] if commits else None


def _epoch():
    with urllib.request.urlopen(HEALTH, timeout=60) as resp:
        return json.load(resp)["store"]["epoch"]


def _body_known(digest):
    missing = _request(API + "/modules/missing", {"hashes": [digest]})["missing"]
    return digest not in missing


def _history(key):
    return _request(API + "/tickets/" + urllib.parse.quote(key, safe=""))["history"] or []


def _explained_by_jobs(key, before, after, sent_ms):
    """Whether a ticket's move from `before` to `after` (stage, version) was
    the proxy's own jobs, not the refused request sent at `sent_ms`."""
    if before is None or after is None:
        return False
    moved = after[1] - before[1]
    # An event stamped from a second before the state was read: a job's
    # commit takes its time before it is written.
    recent = [e for e in _history(key) if e["at_ms"] >= sent_ms - 1000]
    if any(e["actor"] not in JOBS and e["at_ms"] >= sent_ms for e in recent):
        return False
    return moved > 0 and moved <= sum(1 for e in recent if e["actor"] in JOBS)


def _upload_body(case):
    """The bytes an upload sends, as the transport will send them."""
    if case.method.upper() != "PUT":
        return None
    data = case.as_transport_kwargs().get("data")
    if data is None:
        return None
    return data.encode() if isinstance(data, str) else bytes(data)


def _state(case, digest):
    return {
        "tickets": _tickets(),
        "production": _production_head(),
        "epoch": _epoch(),
        "body stored": _body_known(digest) if digest else None,
    }


@schemathesis.hook
def before_call(context, case, kwargs):
    body = None
    try:
        body = _upload_body(case)
    except Exception:  # a body the transport cannot serialise is not sent
        body = None
    digest = hashlib.sha256(body).hexdigest() if body else None
    state = _state(case, digest)
    _before[id(case)] = (digest, state, int(time.time() * 1000))


@schemathesis.check
def refusal_changes_nothing(ctx, response, case):
    """A refused request (4xx) changes nothing in the store."""
    taken = _before.pop(id(case), None)
    if taken is None or not 400 <= response.status_code < 500:
        return None
    digest, before, sent_ms = taken
    after = _state(case, digest)
    for key in set(before["tickets"]) & set(after["tickets"]):
        b, a = before["tickets"][key], after["tickets"][key]
        if b != a and _explained_by_jobs(key, b, a, sent_ms):
            before["tickets"][key] = a
    if after == before:
        return None
    changed = []
    for what in before:
        if before[what] == after[what]:
            continue
        if what == "tickets":
            keys = sorted(set(before[what]) | set(after[what]))
            diff = [
                "%s: %s -> %s" % (k, before[what].get(k), after[what].get(k))
                for k in keys
                if before[what].get(k) != after[what].get(k)
            ]
            changed.append("tickets changed: " + "; ".join(diff[:10]))
        else:
            changed.append("%s: %r -> %r" % (what, before[what], after[what]))
    raise AssertionError(
        "refused with %d, yet the store changed: %s" % (response.status_code, " | ".join(changed))
    )
