// The QA control panel: tickets by stage, a ticket's overrides, links and
// history, and the buttons its role may use. Plain ES module, no build step,
// served by stamp-proxy itself (works offline). Live: server-sent events.

const API = '/__stamp/api/v1';
const $ = (sel) => document.querySelector(sel);
let me = null; // { name, role, csrf }

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'onclick') e.addEventListener('click', v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

async function api(method, path, body) {
  const headers = { 'accept': 'application/json' };
  if (method !== 'GET' && me) headers['x-csrf-token'] = me.csrf;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const resp = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new Error((json.error && json.error.message) || resp.statusText);
    err.status = resp.status;
    err.detail = json.error || {};
    throw err;
  }
  return json;
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : '';
}

// What a role may do, mirroring the server's rules (the server decides).
function allowed(role, action, stage) {
  if (role === 'admin') return true;
  if (action === 'sign-off') return role === 'qa';
  if (action === 'promote') return stage === 'dev' ? role === 'dev' : stage === 'qa' ? role === 'qa' : false;
  if (action === 'revert') return stage === 'qa' && role === 'dev';
  if (action === 'close') return role === 'dev';
  if (action === 'reopen') return stage === 'closed' && role === 'dev';
  return false;
}

async function session() {
  const resp = await fetch('/__stamp/session');
  me = resp.ok ? await resp.json() : null;
  $('#who').textContent = me ? `${me.name} (${me.role})` : '';
  $('#sign-out').hidden = !me;
  $('#sign-in').hidden = !!me;
  $('#open-note').hidden = !(me && me.open);
  return me;
}

async function signIn(ev) {
  ev.preventDefault();
  $('#sign-in-error').textContent = '';
  const resp = await fetch('/__stamp/session', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ token: $('#token').value }),
  });
  if (!resp.ok) {
    const json = await resp.json().catch(() => ({}));
    $('#sign-in-error').textContent = (json.error && json.error.message) || 'Sign-in failed';
    return;
  }
  $('#token').value = '';
  await session();
  route();
  live();
}

async function signOut() {
  if (source) { source.close(); source = null; }
  await fetch('/__stamp/session', { method: 'DELETE', headers: { 'x-csrf-token': me ? me.csrf : '' } });
  me = null;
  await session();
  $('#view').replaceChildren();
}

async function renderList() {
  const { tickets } = await api('GET', '/tickets');
  const view = $('#view');
  const parts = [el('h1', {}, 'Tickets')];
  for (const stage of ['qa', 'prod', 'dev', 'closed']) {
    const rows = tickets.filter((t) => t.stage === stage);
    parts.push(el('h2', { id: `stage-${stage}` }, `${stage} (${rows.length})`));
    if (!rows.length) { parts.push(el('p', { class: 'muted' }, 'None.')); continue; }
    parts.push(el('table', { 'aria-labelledby': `stage-${stage}` },
      el('thead', {}, el('tr', {}, el('th', {}, 'Ticket'), el('th', {}, 'Modules'), el('th', {}, 'Last change'), el('th', {}, 'Preview'))),
      el('tbody', {}, rows.map((t) => el('tr', { 'data-ticket': t.key },
        el('td', {}, el('a', { href: `#/tickets/${t.key}` }, t.key)),
        el('td', {}, Object.entries(t.modules || {}).map(([s, m]) => `${s}: ${m.length}`).join(', ')),
        el('td', {}, when(t.updated_ms), t.last ? el('div', { class: 'muted' }, `${t.last.event} by ${t.last.actor}`) : ''),
        el('td', {}, t.links && (t.links.qa || t.links.dev) ? el('a', { href: t.links.qa || t.links.dev, target: '_blank', rel: 'noopener' }, 'open') : '')))))); 
  }
  view.replaceChildren(...parts);
}

async function act(key, action, version) {
  const out = $('#outcome');
  out.textContent = '';
  out.className = '';
  try {
    const t = await api('POST', `/tickets/${key}/${action}`, { expected_version: version });
    out.className = 'notice';
    out.textContent = `${action}: ${key} is now in ${t.stage}` + (t.warnings ? `\nWarnings:\n${t.warnings.map((w) => `• ${w.policy}: ${w.reason}`).join('\n')}` : '');
    await renderTicket(key, false);
    $('#outcome').className = 'notice';
    $('#outcome').textContent = out.textContent;
  } catch (e) {
    out.className = 'error';
    const denials = e.detail.denials || [];
    out.textContent = denials.length
      ? `Refused by policy:\n${denials.map((d) => `• ${d.policy}: ${d.reason}`).join('\n')}`
      : `${e.message}` + (e.detail.allowed ? ` (allowed: ${e.detail.allowed.join(', ')})` : '');
  }
}

async function renderTicket(key, clearOutcome = true) {
  const t = await api('GET', `/tickets/${key}`);
  const view = $('#view');
  const buttons = ['promote', 'revert', 'close', 'reopen', 'sign-off']
    .filter((a) => (a === 'sign-off' ? t.stage === 'qa' : (t.allowed_actions || []).includes(a)))
    .filter((a) => me && allowed(me.role, a, t.stage))
    .map((a) => el('button', { type: 'button', id: `do-${a}`, onclick: () => act(t.key, a, t.version) }, a));
  const links = Object.entries(t.links || {}).map(([v, url]) => el('li', {},
    el('span', { class: 'stage' }, v), ' ', el('a', { href: url, target: '_blank', rel: 'noopener' }, 'Open preview'), ' ',
    el('button', { type: 'button', class: 'secondary', 'aria-label': `Copy the ${v} share link`, onclick: async (ev) => {
      try { await navigator.clipboard.writeText(url); ev.target.textContent = 'Copied'; } catch { ev.target.textContent = url; }
    } }, 'Copy link')));
  const stages = Object.entries(t.modules || {}).map(([stage, mods]) => [
    el('h2', {}, `${stage} overrides (${mods.length})`),
    el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'Module'), el('th', {}, 'URL'), el('th', {}, 'Size'))),
      el('tbody', {}, mods.map((m) => el('tr', {}, el('td', { class: 'mono' }, m.specifier), el('td', { class: 'mono' }, m.url), el('td', {}, `${m.size} B`))))),
  ]);
  const history = el('ol', { class: 'history' }, (t.history || []).slice().reverse().map((h) => el('li', {},
    el('strong', {}, h.event), ' ', h.from && h.to && h.from !== h.to ? `${h.from} → ${h.to} ` : '',
    el('span', { class: 'muted' }, `by ${h.actor}, ${when(h.at_ms)}`),
    h.commit ? [' ', el('code', {}, h.commit.slice(0, 10))] : '', h.branch ? ` on ${h.branch}` : '',
    h.detail ? el('div', { class: 'muted' }, h.detail) : '')));
  const previous = $('#outcome');
  const outcome = el('p', { id: 'outcome', role: 'status' });
  if (!clearOutcome && previous) { outcome.className = previous.className; outcome.textContent = previous.textContent; }
  view.replaceChildren(
    el('p', {}, el('a', { href: '#/' }, '← All tickets')),
    el('h1', {}, t.key, ' ', el('span', { class: 'stage', id: 'ticket-stage' }, t.stage)),
    el('p', { class: 'muted' }, `version ${t.version}, last change ${when(t.updated_ms)}`,
      t.overlay ? ` — in production: ${t.overlay.live} live, ${t.overlay.retired} settled` : ''),
    el('div', { class: 'actions' }, buttons),
    outcome,
    el('h2', {}, 'Share links'), el('ul', { class: 'links' }, links),
    ...stages.flat(),
    el('h2', {}, 'History'), history);
}

async function route() {
  if (!me) return;
  const m = location.hash.match(/^#\/tickets\/([A-Za-z0-9_-]+)$/);
  try {
    if (m) await renderTicket(m[1]);
    else await renderList();
  } catch (e) {
    if (e.status === 401) { me = null; await session(); return; }
    $('#view').replaceChildren(el('p', { class: 'error', role: 'alert' }, e.message));
  }
}

let source = null;
function live() {
  // Server-sent events: the store's version; refresh what is on screen.
  // Opened once signed in (the stream needs the session).
  if (source && source.readyState !== EventSource.CLOSED) return;
  source = new EventSource(`${API}/events`);
  let last = null;
  source.addEventListener('message', (ev) => {
    const v = JSON.parse(ev.data).version;
    if (last !== null && v !== last && me) {
      const m = location.hash.match(/^#\/tickets\/([A-Za-z0-9_-]+)$/);
      (m ? renderTicket(m[1], false) : renderList()).catch(() => {});
    }
    last = v;
  });
}

$('#sign-in').addEventListener('submit', signIn);
$('#sign-out').addEventListener('click', signOut);
window.addEventListener('hashchange', route);
session().then((s) => { if (s) { route(); live(); } });
