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

// Buttons say where they take the ticket. The server says which a caller
// may press (`allowed_actions`); the panel never guesses.
const LABELS = {
  promote: { dev: 'Promote to qa', qa: 'Release to production' },
  revert: { qa: 'Revert to dev', prod: 'Revert production' },
  close: 'Close ticket',
  reopen: 'Re-open ticket',
};
function label(action, stage) {
  const l = LABELS[action];
  return typeof l === 'string' ? l : (l && l[stage]) || action;
}
// What every visitor would get: these ask to be confirmed.
const touchesProduction = (action, stage) =>
  (action === 'promote' && stage === 'qa') || (action === 'revert' && stage === 'prod');

// Sign-offs as the `sign-off` policy counts them: those after the last change
// of what QA signed (upload, delete, re-open, promotion into qa) stand, until
// withdrawn by who gave them.
const CHANGES = ['upload', 'delete', 'reopen'];
function signOffs(history) {
  let since = 0;
  history.forEach((h, i) => {
    if (CHANGES.includes(h.event) || (h.event === 'promote' && h.to === 'qa')) since = i + 1;
  });
  const out = [];
  history.forEach((h, i) => {
    if (h.event === 'sign-off') out.push({ ...h, state: i < since ? 'invalidated' : 'standing' });
    if (h.event === 'withdraw-sign-off' && i >= since) {
      for (const s of out) if (s.actor === h.actor && s.state === 'standing') s.state = 'withdrawn';
    }
  });
  return out;
}

function moduleList(mods) {
  return mods.map((m) => m.specifier).join(', ');
}

async function session() {
  const resp = await fetch('/__stamp/session');
  const json = await resp.json().catch(() => ({}));
  me = resp.ok ? json : null;
  providers(resp.ok ? [] : json.providers || []);
  $('#who').textContent = me ? `${me.name} (${me.role})` : '';
  $('#sign-out').hidden = !me;
  $('#sign-in').hidden = !!me;
  $('#open-note').hidden = !(me && me.open);
  return me;
}

// `?next=` when it is a page of this origin (the browser's own parser
// decides: tabs, backslashes and the like cannot smuggle another host).
function sameOriginNext() {
  const next = new URLSearchParams(location.search).get('next');
  if (!next || !next.startsWith('/')) return null;
  try {
    const u = new URL(next, location.origin);
    return u.origin === location.origin ? u.pathname + u.search + u.hash : null;
  } catch (_) {
    return null;
  }
}

// The identity providers' sign-in links, which come back to this view.
function providers(list) {
  const next = encodeURIComponent(sameOriginNext() || `/__stamp/${location.hash}`);
  $('#providers').replaceChildren(...list.map((p) => {
    const a = el('a', { class: 'provider', href: `${p.login}?next=${next}` }, `Sign in with ${p.label}`);
    return el('li', {}, a);
  }));
  $('#providers').hidden = list.length === 0;
  $('#token-or').hidden = list.length === 0;
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
  // Sent here to sign in before a protected preview: go back to it.
  const next = sameOriginNext();
  if (next) {
    location.assign(next);
    return;
  }
  await session();
  route();
  live();
}

async function signOut() {
  if (source) { source.close(); source = null; }
  const resp = await fetch('/__stamp/session', { method: 'DELETE', headers: { 'x-csrf-token': me ? me.csrf : '' } });
  const json = await resp.json().catch(() => ({}));
  me = null;
  // A single sign-on session also ends at the provider.
  if (json.logout && /^https?:\/\//.test(json.logout)) { location.assign(json.logout); return; }
  await session();
  $('#view').replaceChildren();
}

// The list reads a page per stage (the API's cursor), so it opens as fast
// at 10,000 tickets as at 10; the filters are the API's own (q: part of
// the key, who: anyone the history names).
const PAGE = 50;
let listFilter = { q: '', who: '' };

function ticketRow(t) {
  return el('tr', { 'data-ticket': t.key },
    el('td', {}, el('a', { href: `#/tickets/${t.key}` }, t.key)),
    el('td', {}, Object.entries(t.modules || {}).map(([s, m]) => `${s}: ${m.length}`).join(', ')),
    el('td', {}, when(t.updated_ms), t.last ? el('div', { class: 'muted' }, `${t.last.event} by ${t.last.actor}`) : ''),
    el('td', { class: 'last-view' }, (t.views || [])[0] ? [when(t.views[0].at_ms), el('div', { class: 'muted' }, viewSummary(t.views[0]))] : '–'),
    el('td', {}, t.links && (t.links.qa || t.links.dev) ? el('a', { href: t.links.qa || t.links.dev, target: '_blank', rel: 'noopener' }, 'open') : ''));
}

async function stageSection(stage) {
  const heading = el('h2', { id: `stage-${stage}` }, stage);
  const rows = el('tbody');
  const table = el('table', { 'aria-labelledby': `stage-${stage}` },
    el('thead', {}, el('tr', {}, el('th', {}, 'Ticket'), el('th', {}, 'Modules'), el('th', {}, 'Last change'), el('th', {}, 'Last view'), el('th', {}, 'Preview'))),
    rows);
  const none = el('p', { class: 'muted' }, 'None.');
  const more = el('button', { type: 'button', class: 'more', 'data-stage': stage }, 'Show more');
  const section = el('section', { 'data-stage': stage }, heading, table, none, more);
  async function page(cursor) {
    const params = new URLSearchParams({ stage, limit: String(PAGE) });
    if (listFilter.q) params.set('q', listFilter.q);
    if (listFilter.who) params.set('who', listFilter.who);
    if (cursor) params.set('cursor', cursor);
    const r = await api('GET', `/tickets?${params}`);
    rows.append(...r.tickets.map(ticketRow));
    const shown = rows.children.length;
    const count = r.total !== undefined ? String(r.total) : `${shown}${r.next ? '+' : ''}`;
    heading.textContent = `${stage} (${count})`;
    table.hidden = shown === 0;
    none.hidden = shown !== 0;
    more.hidden = !r.next;
    more.onclick = () => page(r.next).catch(showError);
  }
  await page(null);
  return section;
}

function showError(e) {
  const out = $('#outcome');
  if (out) { out.textContent = e.message; out.className = 'error'; }
}

async function renderList() {
  const view = $('#view');
  const q = el('input', { type: 'search', id: 'ticket-search', placeholder: 'Ticket key contains…', 'aria-label': 'Ticket key contains' });
  const who = el('input', { type: 'search', id: 'ticket-who', placeholder: 'Acted on by…', 'aria-label': 'Acted on by' });
  q.value = listFilter.q;
  who.value = listFilter.who;
  const form = el('form', { id: 'ticket-filter', role: 'search' }, q, ' ', who, ' ', el('button', { type: 'submit' }, 'Filter'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    listFilter = { q: q.value.trim(), who: who.value.trim() };
    renderList().catch(showError);
  });
  const sections = await Promise.all(['qa', 'prod', 'dev', 'closed'].map(stageSection));
  view.replaceChildren(el('h1', {}, 'Tickets'),
    el('p', {}, el('a', { href: '#/production', id: 'release-log-link' }, 'Production release log')),
    form, ...sections);
}

function said(key, action, from, t, before) {
  const n = (mods) => `${mods.length} module${mods.length === 1 ? '' : 's'}`;
  if (action === 'promote' && from === 'qa') {
    const mods = (before.modules || {}).qa || [];
    return `Released ${key} to production: every visitor now gets its ${n(mods)} (${moduleList(mods)}).`;
  }
  if (action === 'revert' && from === 'prod') {
    return `Reverted production: every visitor gets production without ${key} again; ${key} is in ${t.stage}.`;
  }
  if (action === 'sign-off') return `Signed off ${key}.`;
  if (action === 'withdraw-sign-off') return `Withdrew your sign-off of ${key}.`;
  return `${label(action, from)}: ${key} is now in ${t.stage}.`;
}

async function act(before, action, comment, extra) {
  const key = before.key;
  const out = $('#outcome');
  out.textContent = '';
  out.className = '';
  try {
    // A move that takes code away from where it runs (a revert, a close,
    // a re-open) states the stage it starts from: a write that leaves the
    // stage as it was (the settler's bookkeeping of a fresh release, a
    // sign-off) does not refuse it, so a revert in an incident goes through,
    // its policies judged on the version it is made on. A promotion and a
    // sign-off state the version the person saw: they act on code shown.
    const byStage = ['revert', 'close', 'reopen'].includes(action);
    const body = { ...(byStage ? { from: before.stage } : { expected_version: before.version }), ...(extra || {}) };
    if (comment) body.comment = comment;
    const t = await api('POST', `/tickets/${key}/${action}`, body);
    out.className = 'notice';
    out.textContent = said(key, action, before.stage, t, before) + (t.warnings ? `\nWarnings:\n${t.warnings.map((w) => `• ${w.policy}: ${w.reason}`).join('\n')}` : '');
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

// Asks before a move every visitor would feel: the ticket key typed.
function confirmMove(t, action) {
  const mods = action === 'promote' ? (t.modules || {}).qa || [] : (t.modules || {}).prod || [];
  const what = action === 'promote'
    ? `Release ${t.key} to production? Every visitor will get its ${mods.length} module${mods.length === 1 ? '' : 's'}: ${moduleList(mods)}.`
    : `Revert production? Every visitor will get production without ${t.key}'s ${mods.length} module${mods.length === 1 ? '' : 's'} again.`;
  // A release may go to a share of visitors first, then by steps.
  const releasing = action === 'promote' && t.stage === 'qa';
  const steps = el('input', { id: 'confirm-steps', autocomplete: 'off', spellcheck: 'false', placeholder: '100', 'aria-describedby': 'confirm-steps-help' });
  const every = el('input', { id: 'confirm-every', autocomplete: 'off', spellcheck: 'false', placeholder: '15m' });
  const rollout = releasing ? [
    el('label', { for: 'confirm-steps' }, 'Shares of visitors, in steps (e.g. 5,25,100; empty: everyone at once)'), steps,
    el('p', { id: 'confirm-steps-help', class: 'muted' }, 'Steps are taken by themselves while the ticket\'s side is as healthy as production\'s; a regression reverts it.'),
    el('label', { for: 'confirm-every' }, 'Time between steps (e.g. 15m; 0: by hand)'), every] : [];
  const input = el('input', { id: 'confirm-key', autocomplete: 'off', spellcheck: 'false', 'aria-describedby': 'confirm-what' });
  const go = el('button', { type: 'submit', id: 'confirm-go', disabled: '' }, label(action, t.stage));
  const cancel = el('button', { type: 'button', id: 'confirm-cancel', class: 'secondary' }, 'Cancel');
  const form = el('form', { id: 'confirm', class: 'confirm', role: 'alertdialog', 'aria-labelledby': 'confirm-what' },
    el('p', { id: 'confirm-what' }, what),
    ...rollout,
    el('label', { for: 'confirm-key' }, `Type ${t.key} to confirm`), input,
    el('div', { class: 'actions' }, go, cancel));
  const close = () => { form.remove(); $(`#do-${action}`)?.focus(); };
  input.addEventListener('input', () => { go.disabled = input.value.trim().toUpperCase() !== t.key; });
  form.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') close(); });
  cancel.addEventListener('click', close);
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    if (input.value.trim().toUpperCase() !== t.key) return;
    form.remove();
    const shares = releasing ? steps.value.split(/[ ,]+/).filter(Boolean).map(Number) : [];
    const extra = shares.length && !(shares.length === 1 && shares[0] === 100)
      ? { rollout: { steps: shares, ...(every.value.trim() ? { every: every.value.trim() } : {}) } } : undefined;
    act(t, action, undefined, extra);
  });
  $('#confirm')?.remove();
  $('#outcome').before(form);
  input.focus();
}

// The policies' verdict on the next move, before anyone clicks.
async function checklist(t) {
  if (t.stage !== 'dev' && t.stage !== 'qa') return [];
  const move = label('promote', t.stage);
  let c;
  try {
    c = await api('GET', `/tickets/${t.key}/check?action=promote`);
  } catch (e) {
    return [el('h2', {}, `Before “${move}”`), el('p', { class: 'error' }, e.message)];
  }
  const items = c.checks.map((k) => el('li', { class: k.ok ? 'ok' : 'no', 'data-policy': k.policy },
    el('span', { class: 'mark', 'aria-hidden': 'true' }, k.ok ? '✓' : '✗'), ' ',
    el('strong', {}, k.policy), k.ok ? ': passes' : '', k.reasons.length ? `: ${k.reasons.join('; ')}` : '',
    k.warnings.length ? el('div', { class: 'muted' }, `warning: ${k.warnings.join('; ')}`) : ''));
  const policiesOk = c.checks.every((k) => k.ok);
  const verdict = c.allowed ? `${move} would be allowed now.`
    : !c.role_allows ? `Your role may not make this move (${move}); the policies would ${policiesOk ? 'allow' : 'refuse'} it.`
      : `${move} would be refused now.`;
  return [
    el('h2', { id: 'checklist-title' }, `Before “${move}”`),
    el('p', { id: 'checklist-verdict', class: c.allowed ? 'notice' : 'error' }, verdict),
    items.length ? el('ul', { id: 'checklist', class: 'checklist', 'aria-labelledby': 'checklist-title' }, items)
      : el('p', { class: 'muted', id: 'checklist' }, 'No policy guards this move.'),
  ];
}

// What the ticket changes, module by module: against production as a visitor
// gets it now, or dev against qa (what QA has not seen yet).
function changesSection(t) {
  const mods = t.modules || {};
  const stage = t.stage === 'closed' ? 'dev' : t.stage;
  if (!mods[stage]) return [];
  const choices = [[stage, 'production', `${stage} against production`]];
  if (mods.dev && mods.qa) choices.push(['dev', 'qa', 'dev against qa: what QA has not seen yet']);
  const select = el('select', { id: 'diff-choice' }, choices.map(([s, a, text], i) =>
    el('option', { value: `${s}:${a}`, ...(i === 0 ? { selected: '' } : {}) }, text)));
  const out = el('div', { id: 'diff', 'aria-live': 'polite' }, el('p', { class: 'muted' }, 'Loading…'));
  const load = async () => {
    const [s, a] = select.value.split(':');
    try {
      const d = await api('GET', `/tickets/${t.key}/diff?stage=${s}&against=${a}`);
      out.replaceChildren(...renderDiff(d));
    } catch (e) {
      out.replaceChildren(el('p', { class: 'error' }, e.message));
    }
  };
  select.addEventListener('change', load);
  load();
  return [el('h2', { id: 'changes-title' }, 'What changed'),
    el('label', { for: 'diff-choice' }, 'Compare'), select, out];
}

function size(n) {
  return n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1)} KB`;
}

function renderDiff(d) {
  const parts = [];
  if (d.commit || d.branch) {
    parts.push(el('p', { class: 'muted', id: 'diff-source' }, 'From ',
      d.commit ? el('code', {}, d.commit.slice(0, 10)) : '', d.branch ? ` on branch ${d.branch}` : ''));
  }
  const changed = d.modules.filter((m) => m.status !== 'unchanged').length;
  parts.push(el('p', { id: 'diff-summary' }, `${changed} of ${d.modules.length} module${d.modules.length === 1 ? '' : 's'} ${changed === 1 ? 'differs' : 'differ'}`));
  for (const m of d.modules) {
    const counts = m.diff ? ` (+${m.added_lines} −${m.removed_lines})` : '';
    const sizes = m.before && m.after ? `${size(m.before.size)} → ${size(m.after.size)}`
      : m.after ? size(m.after.size) : m.before ? size(m.before.size) : '';
    const body = m.diff
      ? el('pre', { class: 'diff', tabindex: '0' }, m.diff.split('\n').map((line) =>
        el('span', { class: line.startsWith('+') ? 'add' : line.startsWith('-') ? 'del' : line.startsWith('@@') ? 'hunk' : '' }, line + '\n')))
      : el('p', { class: 'muted' }, `${m.kind}${sizes ? `: ${sizes}` : ''}`);
    parts.push(el('details', { class: 'module-diff', 'data-status': m.status, 'data-specifier': m.specifier },
      el('summary', {}, el('span', { class: 'mono' }, m.specifier), ` — ${m.status}${counts}`, m.kind !== 'text' ? ` · ${m.kind}` : ''),
      m.note ? el('p', { class: 'muted' }, m.note) : '', body));
  }
  return parts;
}

function signOffSection(t) {
  const all = signOffs(t.history || []);
  const mayAct = (t.allowed_actions || []).includes('sign-off');
  const mine = me && all.some((s) => s.actor === me.name && s.state === 'standing');
  const parts = [el('h2', { id: 'sign-offs-title' }, 'Sign-offs')];
  const standing = all.filter((s) => s.state === 'standing').length;
  parts.push(el('p', { id: 'sign-off-count' }, `${standing} standing` + (all.length > standing ? `, ${all.length - standing} no longer counting` : '')));
  if (all.length) {
    parts.push(el('ul', { id: 'sign-off-list', 'aria-labelledby': 'sign-offs-title' }, all.map((s) => el('li', { class: s.state },
      el('strong', {}, s.actor), ` signed off ${when(s.at_ms)}`, s.detail ? ` — “${s.detail}”` : '',
      s.state === 'invalidated' ? el('span', { class: 'muted' }, ' (invalidated by a later upload or promotion)') : '',
      s.state === 'withdrawn' ? el('span', { class: 'muted' }, ' (withdrawn)') : ''))));
  }
  if (mayAct && t.stage === 'qa') {
    const comment = el('input', { id: 'sign-off-comment', maxlength: '1000', placeholder: 'optional' });
    parts.push(el('div', { class: 'sign-off' },
      el('label', { for: 'sign-off-comment' }, 'Comment'), comment,
      el('div', { class: 'actions' },
        el('button', { type: 'button', id: 'do-sign-off', onclick: () => act(t, 'sign-off', comment.value.trim()) }, 'Sign off'),
        mine ? el('button', { type: 'button', id: 'do-withdraw-sign-off', class: 'secondary', onclick: () => act(t, 'withdraw-sign-off', comment.value.trim()) }, 'Withdraw my sign-off') : '')));
  }
  return parts;
}

// One page view in words, as its probe measured it.
function viewSummary(v) {
  const prod = v.production || [], also = v.production_also || [], not = v.not_run || [], worklets = v.worklets || [];
  const seen = v.ran + prod.length + not.length;
  let s = prod.length || also.length || not.length
    ? `${v.ran} of ${seen} ran${prod.length ? `: production's ${prod.join(', ')} ran instead` : ''}${also.length ? `; production's ${also.join(', ')} also loaded` : ''}${not.length ? `; ${not.join(', ')} loaded but did not run` : ''}`
    : seen ? `${v.ran} of ${seen} ran${v.workers ? ` (${v.workers} in a worker)` : ''}`
      : worklets.length ? `none of its ${v.expected} modules seen running` : `none of its ${v.expected} modules used`;
  // Worklets cannot tell the page what they ran.
  if (worklets.length) s += `; not seen: what worklet ${worklets.join(', ')} ran (worklets cannot report)`;
  s += v.error_count ? ` · ${v.error_count} error${v.error_count === 1 ? '' : 's'}` : ' · no errors';
  return s;
}

// What browsers actually ran on this ticket's pages, per stage.
function viewsSection(t) {
  const views = t.views || [];
  if (!views.length) return [el('h2', {}, 'Last views'), el('p', { class: 'muted', id: 'views-none' }, 'No page of this ticket has reported yet.')];
  return [el('h2', {}, 'Last views'),
    el('table', { id: 'views' }, el('thead', {}, el('tr', {}, el('th', {}, 'When'), el('th', {}, 'View'), el('th', {}, 'Page'), el('th', {}, 'What ran'), el('th', {}, 'Errors'))),
      el('tbody', {}, views.map((v) => el('tr', { class: (v.production || []).length || (v.production_also || []).length || (v.not_run || []).length || v.error_count ? 'warn' : undefined },
        el('td', {}, when(v.at_ms)), el('td', {}, v.view), el('td', { class: 'mono' }, v.page || '/'),
        el('td', { class: 'ran' }, viewSummary(v)),
        el('td', {}, (v.errors || []).map((e) => el('div', { class: 'error' },
          el('strong', {}, e.kind), ' ', e.message, e.source ? el('span', { class: 'muted' }, ` ${e.source}${e.line ? `:${e.line}` : ''}`) : '',
          e.stack ? el('div', { class: 'mono muted' }, e.stack) : '')))))))];
}

// A release rolling out: its share, both sides' numbers, the verdict so
// far, and the controls (next step, pause or resume, abort).
function rolloutSection(t) {
  const r = t.rollout;
  if (!r) return [];
  const rate = (c) => c.views ? `${(100 * c.erring_views / c.views).toFixed(1)}%` : '–';
  // Sampled pages sent, and the share of them heard from: a side whose
  // pages hang or crash sends pages and hears nothing back.
  // Where its files load: a broken route shows here undiluted.
  const used = (c) => c.touched ? `${Math.min(c.touched_erring, c.touched)} of ${c.touched} (${(100 * Math.min(c.touched_erring, c.touched) / c.touched).toFixed(1)}%)` : '–';
  const heard = (c) => c.sent ? `${Math.min(c.heard, c.sent)} of ${c.sent} (${(100 * Math.min(c.heard, c.sent) / c.sent).toFixed(1)}%)` : '–';
  const step = (body) => async () => {
    const out = $('#outcome');
    try {
      await api('POST', `/tickets/${t.key}/rollout`, { expected_version: t.version, ...body });
      await renderTicket(t.key);
    } catch (e) {
      out.className = 'error';
      const denials = e.detail.denials || [];
      out.textContent = denials.length ? `Refused by policy:\n${denials.map((d) => `• ${d.policy}: ${d.reason}`).join('\n')}` : e.message;
    }
  };
  const next = r.steps.length ? r.steps[0] : 100;
  const controls = [
    el('button', { type: 'button', id: 'rollout-next', class: 'danger', onclick: step({ action: 'next' }) }, `Next step: ${next}%`),
    r.paused
      ? el('button', { type: 'button', id: 'rollout-resume', onclick: step({ action: 'resume' }) }, 'Resume')
      : el('button', { type: 'button', id: 'rollout-pause', class: 'secondary', onclick: step({ action: 'pause' }) }, 'Pause'),
    el('button', { type: 'button', id: 'rollout-abort', class: 'danger', onclick: () => confirmMove(t, 'revert') }, 'Abort (revert)'),
  ];
  return [el('h2', {}, 'Rollout'),
    el('p', { id: 'rollout-share', class: r.verdict === 'regressed' || r.verdict === 'silent' ? 'error' : undefined },
      el('strong', {}, `${r.percent}% of production's visitors`),
      r.paused ? ' · paused' : r.next_at_ms && r.steps.length ? ` · next ${r.steps[0]}% ${when(r.next_at_ms)}` : ' · steps by hand'),
    el('table', { id: 'rollout-sides' },
      el('thead', {}, el('tr', {}, el('th', {}, 'Side'), el('th', {}, 'Views'), el('th', {}, 'With errors'), el('th', {}, 'Error rate'), el('th', {}, 'With errors where its files load'), el('th', {}, 'Pages heard from'))),
      el('tbody', {}, [['ticket', r.ticket], ['production', r.production]].map(([side, c]) => el('tr', {},
        el('td', {}, side), el('td', {}, String(c.views)), el('td', {}, String(c.erring_views)), el('td', {}, rate(c)), el('td', {}, used(c)), el('td', {}, heard(c)))))),
    el('p', { id: 'rollout-verdict', class: 'muted' }, r.signal ? r.said : 'No page signal: the proxy\'s reports.sample is 0, so steps go by time alone.'),
    el('div', { class: 'actions' }, controls)];
}

async function renderTicket(key, clearOutcome = true) {
  const t = await api('GET', `/tickets/${key}`);
  const view = $('#view');
  const buttons = ['promote', 'revert', 'close', 'reopen']
    .filter((a) => (t.allowed_actions || []).includes(a))
    .map((a) => el('button', {
      type: 'button', id: `do-${a}`, class: touchesProduction(a, t.stage) ? 'danger' : undefined,
      onclick: () => (touchesProduction(a, t.stage) ? confirmMove(t, a) : act(t, a)),
    }, label(a, t.stage)));
  const checks = await checklist(t);
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
    ...rolloutSection(t),
    ...checks,
    ...changesSection(t),
    ...(t.stage === 'qa' || (t.history || []).some((h) => h.event === 'sign-off') ? signOffSection(t) : []),
    el('h2', {}, 'Share links'), el('ul', { class: 'links' }, links),
    ...viewsSection(t),
    ...stages.flat(),
    el('h2', {}, 'History'), history);
}

// What production served, change by change (the history repository).
async function renderProduction() {
  const view = $('#view');
  const head = [el('p', {}, el('a', { href: '#/' }, '← All tickets')), el('h1', {}, 'Production release log')];
  let log;
  try {
    log = await api('GET', '/production/history?limit=100');
  } catch (e) {
    if (e.status !== 404) throw e;
    view.replaceChildren(...head, el('p', { class: 'muted', id: 'release-log' }, e.message));
    return;
  }
  const rows = log.commits.map((c, i) => el('tr', {},
    el('td', {}, when(c.at_ms), i === 0 ? el('div', { class: 'stage' }, 'live now') : ''),
    el('td', {}, c.summary),
    el('td', {}, c.released.length ? c.released.flatMap((k, j) => [j ? ', ' : '', el('a', { href: `#/tickets/${k}` }, k)]) : 'production only'),
    el('td', {}, String(c.overrides)),
    el('td', { class: 'mono' }, c.id.slice(0, 10))));
  view.replaceChildren(...head,
    el('p', { class: 'muted' }, 'Newest first: what every visitor got after each change. ',
      el('code', {}, 'stamp --revert --to COMMIT'), ' takes production back to one of them.'),
    log.commits.length
      ? el('table', { id: 'release-log' },
        el('thead', {}, el('tr', {}, el('th', {}, 'When'), el('th', {}, 'Change'), el('th', {}, 'Released tickets'), el('th', {}, 'Overrides'), el('th', {}, 'Commit'))),
        el('tbody', {}, rows))
      : el('p', { class: 'muted', id: 'release-log' }, 'Nothing was released yet.'));
}

async function route() {
  if (!me) return;
  const m = location.hash.match(/^#\/tickets\/([A-Za-z0-9_-]+)$/);
  try {
    if (m) await renderTicket(m[1]);
    else if (location.hash === '#/production') await renderProduction();
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
      const page = m ? renderTicket(m[1], false) : location.hash === '#/production' ? renderProduction() : renderList();
      page.catch(() => {});
    }
    last = v;
  });
}

// A rollout's numbers move with every page view, which changes no version:
// while a ticket rolling out is on screen, its numbers are read again.
setInterval(() => {
  const m = location.hash.match(/^#\/tickets\/([A-Za-z0-9_-]+)$/);
  if (me && m && $('#rollout-sides') && !$('#confirm') && document.visibilityState === 'visible') {
    renderTicket(m[1], false).catch(() => {});
  }
}, 5000);

$('#sign-in').addEventListener('submit', signIn);
$('#sign-out').addEventListener('click', signOut);
window.addEventListener('hashchange', route);
session().then((s) => { if (s) { route(); live(); } });
