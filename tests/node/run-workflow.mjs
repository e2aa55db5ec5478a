// Runs one job of a GitHub Actions workflow file on this machine, the way a
// GitHub-hosted runner would run it for one event, so that the workflow we
// ship (conf/github-actions/) is tested as written: its `on:` filter, its
// `if:` conditions, `${{ }}` expressions, `GITHUB_OUTPUT` step outputs,
// `GITHUB_STEP_SUMMARY`, and every `run:` script under bash with GitHub's
// flags (`bash --noprofile --norc -eo pipefail`).
//
// GitHub's runner cannot run here (no network, no containers). This is the
// part of it the workflow uses, and it refuses anything else loudly: an
// action it does not know, an expression function or operator it does not
// implement. Known actions: actions/checkout (a clone of --repo detached
// at the event's sha, or `ref:`; full with `fetch-depth: 0`, else depth 1),
// actions/setup-node (checks the machine's node major; `registry-url`
// writes the .npmrc setup-node writes, with ${NODE_AUTH_TOKEN}),
// dtolnay/rust-toolchain (`rustup target add` of `targets`, with the
// cargo and rustup on PATH), actions/upload-artifact and
// actions/download-artifact (v4: `name`, `path`, `if-no-files-found`;
// `pattern`, `path`, `merge-multiple`; files lose their mode, as there).
//
// node run-workflow.mjs WORKFLOW JOB --event EVENT.json --repo GIT_DIR
//   --workspace DIR [--vars JSON] [--secrets JSON]
// Prints one JSON object: {conclusion, steps: [{id, name, outcome}], summary}.
//
// node run-workflow.mjs WORKFLOW --all --event EVENT.json --repo GIT_DIR
//   --workspace DIR [--vars JSON] [--secrets JSON]
// runs every job in `needs` order, each `strategy.matrix.include` entry as
// its own job in DIR/<job>-<n> (`runs-on` from the matrix; a Windows or
// macOS runner's steps run here under bash, so they must say `shell: bash`
// through `defaults.run.shell`), and prints {conclusion, jobs: [{job,
// matrix, runs_on, conclusion, steps}], summary}.
// The event name is $GITHUB_EVENT_NAME (pull_request by default); `on:`
// filters pull_request `types`, push `tags`/`branches` (globs with *) and
// workflow_dispatch.

import { readFileSync, writeFileSync, mkdtempSync, existsSync, mkdirSync, cpSync, statSync, readdirSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import yaml from 'js-yaml';

const args = process.argv.slice(2);
const [workflowFile, jobName] = args;
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  if (i < 0) {
    if (dflt === undefined) throw new Error(`--${name} is required`);
    return dflt;
  }
  return args[i + 1];
};
const event = JSON.parse(readFileSync(opt('event'), 'utf8'));
const repo = opt('repo');
const workspace = opt('workspace');
const vars = JSON.parse(opt('vars', '{}'));
const secrets = JSON.parse(opt('secrets', '{}'));
const workflow = yaml.load(readFileSync(workflowFile, 'utf8'));
if (!workflow.jobs) throw new Error(`${workflowFile} has no jobs`);

// ------------------------------------------------------------ expressions
// GitHub's expression language, the subset workflows like ours use:
// property paths, 'strings', numbers, true/false/null, == != && || ! and
// parentheses. Comparisons of strings ignore case, as GitHub's do.

function tokenize(src) {
  const out = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (/\s/.test(c)) { i++; continue; }
    const two = src.slice(i, i + 2);
    if (['==', '!=', '&&', '||'].includes(two)) { out.push({ op: two }); i += 2; continue; }
    if ('!()'.includes(c)) { out.push({ op: c }); i++; continue; }
    if (c === "'") {
      let s = '';
      i++;
      for (;;) {
        if (i >= src.length) throw new Error(`unterminated string in ${src}`);
        if (src[i] === "'" && src[i + 1] === "'") { s += "'"; i += 2; continue; }
        if (src[i] === "'") { i++; break; }
        s += src[i++];
      }
      out.push({ value: s });
      continue;
    }
    const m = /^[A-Za-z_][A-Za-z0-9_.-]*|^-?[0-9]+(\.[0-9]+)?/.exec(src.slice(i));
    if (!m) throw new Error(`cannot read the expression at: ${src.slice(i)}`);
    const word = m[0];
    i += word.length;
    if (src[i] === '(') throw new Error(`expression function ${word}() is not supported`);
    if (/^-?[0-9]/.test(word)) out.push({ value: Number(word) });
    else if (word === 'true' || word === 'false') out.push({ value: word === 'true' });
    else if (word === 'null') out.push({ value: null });
    else out.push({ path: word });
  }
  return out;
}

function evaluate(src, ctx) {
  const tokens = tokenize(src);
  let at = 0;
  const peek = () => tokens[at];
  const take = (op) => {
    if (peek()?.op !== op) throw new Error(`expected ${op} in ${src}`);
    at++;
  };
  const lookup = (path) => {
    let v = ctx;
    for (const part of path.split('.')) {
      if (v === null || v === undefined || typeof v !== 'object') return null;
      v = v[part];
    }
    return v === undefined ? null : v;
  };
  const equal = (a, b) =>
    typeof a === 'string' && typeof b === 'string' ? a.toLowerCase() === b.toLowerCase() : a === b;
  const truthy = (v) => !(v === null || v === false || v === 0 || v === '' || Number.isNaN(v));
  const primary = () => {
    const t = tokens[at++];
    if (!t) throw new Error(`unexpected end of ${src}`);
    if (t.op === '!') return !truthy(primary());
    if (t.op === '(') { const v = or(); take(')'); return v; }
    if ('value' in t) return t.value;
    if (t.path) return lookup(t.path);
    throw new Error(`unexpected ${t.op} in ${src}`);
  };
  const comparison = () => {
    let v = primary();
    while (peek()?.op === '==' || peek()?.op === '!=') {
      const op = tokens[at++].op;
      const w = primary();
      v = op === '==' ? equal(v, w) : !equal(v, w);
    }
    return v;
  };
  const and = () => {
    let v = comparison();
    while (peek()?.op === '&&') { at++; const w = comparison(); v = truthy(v) ? w : v; }
    return v;
  };
  const or = () => {
    let v = and();
    while (peek()?.op === '||') { at++; const w = and(); v = truthy(v) ? v : w; }
    return v;
  };
  const v = or();
  if (at !== tokens.length) throw new Error(`unexpected tokens at the end of ${src}`);
  return v;
}

const truthy = (v) => !(v === null || v === false || v === 0 || v === '');
const show = (v) => (v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
const substitute = (text, ctx) =>
  String(text).replace(/\$\{\{(.*?)\}\}/g, (_, e) => show(evaluate(e, ctx)));
const condition = (text, ctx) => {
  const m = /^\s*\$\{\{(.*)\}\}\s*$/s.exec(String(text));
  return truthy(evaluate(m ? m[1] : String(text), ctx));
};

// ------------------------------------------------------------------ the jobs

const name = process.env.GITHUB_EVENT_NAME || 'pull_request';
const pr = event.pull_request || {};
const ref = event.ref ?? (pr.head ? `refs/pull/${pr.number ?? 1}/merge` : '');
const github = {
  event_name: name,
  event,
  ref,
  ref_name: ref.replace(/^refs\/(heads|tags)\//, ''),
  ref_type: ref.startsWith('refs/tags/') ? 'tag' : 'branch',
  head_ref: pr.head?.ref ?? '',
  base_ref: pr.base?.ref ?? '',
  sha: pr.head?.sha ?? event.after ?? event.sha ?? '',
  repository: event.repository?.full_name ?? '',
  workspace,
};
const files = mkdtempSync(join(tmpdir(), 'run-workflow-'));
const summaryFile = join(files, 'summary.md');
writeFileSync(summaryFile, '');
const artifactStore = join(files, 'artifacts');

const WORKFLOW_KEYS = ['name', 'on', 'permissions', 'concurrency', 'defaults', 'jobs', 'env'];
for (const k of Object.keys(workflow)) if (!WORKFLOW_KEYS.includes(k)) throw new Error(`workflow key ${k} is not known to this runner`);
const JOB_KEYS = ['runs-on', 'env', 'steps', 'needs', 'strategy', 'permissions', 'if', 'name', 'defaults'];
const shellOf = (job, step) => step.shell ?? job.defaults?.run?.shell ?? workflow.defaults?.run?.shell;

// The `on:` filter: the event, its activity type, its tags or branches.
const glob = (pattern, text) =>
  new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*\*/g, '\u0000').replace(/\*/g, '[^/]*').replace(/\u0000/g, '.*')}$`).test(text);
function triggered() {
  const on = typeof workflow.on === 'string' ? { [workflow.on]: null } : Array.isArray(workflow.on)
    ? Object.fromEntries(workflow.on.map((e) => [e, null])) : workflow.on;
  if (!(name in on)) return false;
  const filter = on[name] || {};
  for (const k of Object.keys(filter)) {
    if (!{ pull_request: ['types'], push: ['tags', 'branches'], workflow_dispatch: [] }[name]?.includes(k)) {
      throw new Error(`on: ${name}: ${k} is not known to this runner`);
    }
  }
  if (filter.types && !filter.types.includes(event.action)) return false;
  if (name === 'push' && (filter.tags || filter.branches)) {
    if (github.ref_type === 'tag') return (filter.tags || []).some((p) => glob(p, github.ref_name));
    return (filter.branches || []).some((p) => glob(p, github.ref_name));
  }
  return true;
}

// Runs one job (one matrix entry) in `dir`: {conclusion, steps}.
function runJob(jobName, job, matrix, dir) {
  for (const k of Object.keys(job)) if (!JOB_KEYS.includes(k)) throw new Error(`${jobName}: job key ${k} is not known to this runner`);
  if (job.if !== undefined) throw new Error(`${jobName}: a job-level if is not implemented`);
  const ctx = { github: { ...github, workspace: dir }, vars, secrets, matrix, env: {}, steps: {}, runner: { os: 'Linux', temp: files } };
  const runsOn = substitute(job['runs-on'], ctx);
  const os = /^windows-/.test(runsOn) ? 'Windows' : /^macos-/.test(runsOn) ? 'macOS' : /^ubuntu-/.test(runsOn) ? 'Linux' : null;
  if (!os) throw new Error(`${jobName}: runs-on ${runsOn} is not a GitHub-hosted runner this runner knows`);
  ctx.runner.os = os;
  const jobEnv = {};
  for (const [k, v] of Object.entries({ ...(workflow.env || {}), ...(job.env || {}) })) jobEnv[k] = substitute(v, ctx);
  ctx.env = { ...jobEnv };
  mkdirSync(dir, { recursive: true });

  const steps = [];
  let failed = false;
  for (const [index, step] of (job.steps || []).entries()) {
    const id = step.id || `__step${index}`;
    const label = substitute(step.name || step.uses || String(step.run).split('\n')[0], ctx);
    // Without an `if:`, a step runs only while the job succeeds (`success()`);
    // our conditions never ask for failure() or always().
    const runs = !failed && (step.if === undefined || condition(step.if, ctx));
    if (!runs) {
      steps.push({ id, name: label, outcome: 'skipped' });
      ctx.steps[id] = { outputs: {}, outcome: 'skipped', conclusion: 'skipped' };
      continue;
    }
    const env = { ...jobEnv };
    for (const [k, v] of Object.entries(step.env || {})) env[k] = substitute(v, { ...ctx, env });
    let ok;
    const outputs = {};
    if (step.uses) {
      ok = useAction(step, ctx, dir, jobEnv, jobName);
    } else {
      const shell = shellOf(job, step);
      if (shell !== undefined && shell !== 'bash') throw new Error(`${jobName}: shell ${shell} is not known to this runner`);
      if (os === 'Windows' && shell !== 'bash') {
        throw new Error(`${jobName}: a run step on ${runsOn} without shell: bash would run in PowerShell, which this runner does not have`);
      }
      const outputFile = join(files, `output-${jobName}-${index}`);
      writeFileSync(outputFile, '');
      const script = join(files, `step-${jobName}-${index}.sh`);
      writeFileSync(script, substitute(step.run, { ...ctx, env }));
      const r = spawnSync('bash', ['--noprofile', '--norc', '-eo', 'pipefail', script], {
        cwd: dir,
        env: {
          ...process.env,
          CI: 'true',
          GITHUB_ACTIONS: 'true',
          GITHUB_EVENT_NAME: name,
          GITHUB_REF: github.ref,
          GITHUB_REF_NAME: github.ref_name,
          GITHUB_REF_TYPE: github.ref_type,
          GITHUB_HEAD_REF: github.head_ref,
          GITHUB_BASE_REF: github.base_ref,
          GITHUB_SHA: github.sha,
          GITHUB_WORKSPACE: dir,
          GITHUB_OUTPUT: outputFile,
          GITHUB_STEP_SUMMARY: summaryFile,
          RUNNER_OS: os,
          RUNNER_TEMP: files,
          ...env,
        },
        stdio: ['ignore', 'inherit', 'inherit'],
      });
      ok = r.status === 0;
      Object.assign(outputs, readOutputs(outputFile));
    }
    const outcome = ok ? 'success' : 'failure';
    steps.push({ id, name: label, outcome });
    ctx.steps[id] = { outputs, outcome, conclusion: outcome };
    failed ||= !ok;
  }
  return { conclusion: failed ? 'failure' : 'success', steps, runs_on: runsOn };
}

// The matrix entries of a job: [{}] without a strategy.
function matrixOf(jobName, job) {
  const strategy = job.strategy;
  if (!strategy) return [{}];
  for (const k of Object.keys(strategy)) if (!['matrix', 'fail-fast'].includes(k)) throw new Error(`${jobName}: strategy.${k} is not known to this runner`);
  const keys = Object.keys(strategy.matrix || {});
  if (keys.join() !== 'include') throw new Error(`${jobName}: only strategy.matrix.include is known to this runner (not ${keys.join(', ')})`);
  return strategy.matrix.include;
}

if (jobName !== '--all') {
  const job = workflow.jobs?.[jobName];
  if (!job) throw new Error(`${workflowFile} has no job ${jobName}`);
  if (!triggered()) {
    console.log(JSON.stringify({ conclusion: 'skipped', steps: [], summary: '' }));
    process.exit(0);
  }
  const r = runJob(jobName, job, {}, workspace);
  console.log(JSON.stringify({ conclusion: r.conclusion, steps: r.steps, summary: readFileSync(summaryFile, 'utf8') }));
  process.exit(0);
}

// Every job, in `needs` order; a job whose needs did not all succeed is skipped.
const jobsRun = [];
const done = new Map();
if (!triggered()) {
  console.log(JSON.stringify({ conclusion: 'skipped', jobs: [], summary: '' }));
  process.exit(0);
}
const order = [];
const visit = (id, seen = []) => {
  if (order.includes(id)) return;
  if (seen.includes(id)) throw new Error(`needs: a cycle through ${id}`);
  const job = workflow.jobs[id];
  if (!job) throw new Error(`needs: no job ${id}`);
  for (const n of [].concat(job.needs || [])) visit(n, [...seen, id]);
  order.push(id);
};
Object.keys(workflow.jobs).forEach((id) => visit(id));
for (const id of order) {
  const job = workflow.jobs[id];
  const needsOk = [].concat(job.needs || []).every((n) => done.get(n) === 'success');
  let conclusion = 'success';
  for (const [n, matrix] of matrixOf(id, job).entries()) {
    if (!needsOk) {
      jobsRun.push({ job: id, matrix, runs_on: null, conclusion: 'skipped', steps: [] });
      conclusion = 'skipped';
      continue;
    }
    process.stderr.write(`\n=== ${id} ${JSON.stringify(matrix)}\n`);
    const r = runJob(id, job, matrix, join(workspace, `${id}-${n}`));
    jobsRun.push({ job: id, matrix, runs_on: r.runs_on, conclusion: r.conclusion, steps: r.steps });
    if (r.conclusion !== 'success') conclusion = 'failure';
  }
  done.set(id, conclusion);
}
const overall = jobsRun.some((j) => j.conclusion === 'failure') ? 'failure' : jobsRun.every((j) => j.conclusion === 'skipped') ? 'skipped' : 'success';
console.log(JSON.stringify({ conclusion: overall, jobs: jobsRun, summary: readFileSync(summaryFile, 'utf8') }));
process.exit(0);

// `name=value` lines, and `name<<DELIMITER` … `DELIMITER` blocks.
function readOutputs(file) {
  const out = {};
  const lines = readFileSync(file, 'utf8').split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const heredoc = /^([^=<]+)<<(.+)$/.exec(line);
    if (heredoc) {
      const body = [];
      while (++i < lines.length && lines[i] !== heredoc[2]) body.push(lines[i]);
      out[heredoc[1]] = body.join('\n');
    } else if (line.includes('=')) {
      out[line.slice(0, line.indexOf('='))] = line.slice(line.indexOf('=') + 1);
    }
  }
  return out;
}

function useAction(step, ctx, workspace, jobEnv, jobName) {
  const [action] = step.uses.split('@');
  const withs = {};
  for (const [k, v] of Object.entries(step.with || {})) withs[k] = substitute(v, ctx);
  const known = {
    'actions/checkout': ['ref', 'fetch-depth'],
    'actions/setup-node': ['node-version', 'cache', 'registry-url'],
    'dtolnay/rust-toolchain': ['targets'],
    'actions/upload-artifact': ['name', 'path', 'if-no-files-found'],
    'actions/download-artifact': ['pattern', 'path', 'merge-multiple'],
  }[action];
  if (!known) throw new Error(`action ${step.uses} is not known to this runner`);
  for (const k of Object.keys(withs)) if (!known.includes(k)) throw new Error(`${step.uses}: with.${k} is not known to this runner`);
  const git = (...a) => spawnSync('git', a, { cwd: workspace, stdio: ['ignore', 'inherit', 'inherit'] }).status === 0;
  switch (action) {
    case 'actions/checkout': {
      if (existsSync(join(workspace, '.git'))) throw new Error(`${workspace} is checked out already`);
      if (withs['fetch-depth'] === '0') {
        const clone = spawnSync('git', ['clone', '--quiet', '--no-checkout', repo, workspace], { stdio: 'inherit' });
        return clone.status === 0 && git('checkout', '--quiet', '--detach', withs.ref || github.sha);
      }
      if (withs['fetch-depth'] !== undefined) throw new Error('only fetch-depth: 0 or the default (1) is supported');
      mkdirSync(workspace, { recursive: true });
      return git('init', '--quiet') && git('remote', 'add', 'origin', `file://${repo}`) &&
        git('fetch', '--quiet', '--depth=1', 'origin', withs.ref || github.sha) && git('checkout', '--quiet', '--detach', 'FETCH_HEAD');
    }
    case 'actions/setup-node': {
      const major = process.versions.node.split('.')[0];
      if (String(withs['node-version']) !== major) {
        console.error(`setup-node: wants node ${withs['node-version']}, this machine has ${process.versions.node}`);
        return false;
      }
      if (withs['registry-url']) {
        // What setup-node writes: the registry, and its token read from
        // NODE_AUTH_TOKEN when npm runs.
        const url = new URL(withs['registry-url']);
        const npmrc = join(files, `npmrc-${jobName}`);
        writeFileSync(npmrc, `//${url.host}${url.pathname.replace(/\/?$/, '/')}:_authToken=\${NODE_AUTH_TOKEN}\nregistry=${url.href.replace(/\/?$/, '/')}\n`);
        jobEnv.NPM_CONFIG_USERCONFIG = npmrc;
        jobEnv.NODE_AUTH_TOKEN = 'XXXXX-XXXXX-XXXXX-XXXXX';
      }
      return true;
    }
    case 'dtolnay/rust-toolchain': {
      if (!step.uses.endsWith('@stable')) throw new Error(`${step.uses}: only @stable is known to this runner`);
      const has = (t) => spawnSync(t, ['--version'], { stdio: 'ignore' }).status === 0;
      if (!has('cargo') || !has('rustup')) {
        console.error('rust-toolchain: cargo and rustup must be on PATH');
        return false;
      }
      const targets = (withs.targets || '').split(/[\s,]+/).filter(Boolean);
      return !targets.length || spawnSync('rustup', ['target', 'add', ...targets], { cwd: workspace, stdio: ['ignore', 'inherit', 'inherit'] }).status === 0;
    }
    case 'actions/upload-artifact': {
      // v4: the files under `path`, relative to it; names are unique per run.
      const to = join(artifactStore, withs.name);
      if (existsSync(to)) throw new Error(`upload-artifact: an artifact ${withs.name} exists already (v4 names are unique)`);
      const from = join(workspace, withs.path);
      if (!existsSync(from)) {
        if ((withs['if-no-files-found'] ?? 'warn') === 'error') {
          console.error(`upload-artifact: no files were found with the provided path: ${withs.path}`);
          return false;
        }
        return true;
      }
      cpSync(from, to, { recursive: true });
      // The zip an artifact is stored as does not keep file modes.
      const strip = (p) => statSync(p).isDirectory() ? readdirSync(p).forEach((e) => strip(join(p, e))) : chmodSync(p, 0o644);
      strip(to);
      return true;
    }
    case 'actions/download-artifact': {
      const into = join(workspace, withs.path || '.');
      const names = existsSync(artifactStore) ? readdirSync(artifactStore).filter((n) => !withs.pattern || glob(withs.pattern, n)) : [];
      if (!names.length) {
        console.error(`download-artifact: no artifact matches ${withs.pattern}`);
        return false;
      }
      for (const n of names) cpSync(join(artifactStore, n), withs['merge-multiple'] === 'true' ? into : join(into, n), { recursive: true });
      return true;
    }
  }
}
