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
// implement. Known actions: actions/checkout (a full clone of --repo,
// detached at the event's head sha, as `fetch-depth: 0` and `ref: head.sha`
// leave it) and actions/setup-node (checks the machine's node major).
//
// node run-workflow.mjs WORKFLOW JOB --event EVENT.json --repo GIT_DIR
//   --workspace DIR [--vars JSON] [--secrets JSON]
// Prints one JSON object: {conclusion, steps: [{id, name, outcome}], summary}.

import { readFileSync, writeFileSync, mkdtempSync, existsSync } from 'node:fs';
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
const job = workflow.jobs?.[jobName];
if (!job) throw new Error(`${workflowFile} has no job ${jobName}`);

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

// ------------------------------------------------------------------ the job

const name = process.env.GITHUB_EVENT_NAME || 'pull_request';
const pr = event.pull_request || {};
const github = {
  event_name: name,
  event,
  head_ref: pr.head?.ref ?? '',
  base_ref: pr.base?.ref ?? '',
  sha: pr.head?.sha ?? event.after ?? '',
  repository: event.repository?.full_name ?? '',
  workspace,
};
const ctx = { github, vars, secrets, env: {}, steps: {}, runner: { os: 'Linux', temp: tmpdir() } };
const result = (conclusion, steps, summary) => {
  console.log(JSON.stringify({ conclusion, steps, summary }));
  process.exit(0);
};

// The `on:` filter: the event and its activity type.
const on = typeof workflow.on === 'string' ? { [workflow.on]: null } : workflow.on;
if (!(name in on)) result('skipped', [], '');
const types = on[name]?.types;
if (types && !types.includes(event.action)) result('skipped', [], '');

const files = mkdtempSync(join(tmpdir(), 'run-workflow-'));
const summaryFile = join(files, 'summary.md');
writeFileSync(summaryFile, '');
const jobEnv = {};
for (const [k, v] of Object.entries(job.env || {})) jobEnv[k] = substitute(v, ctx);
ctx.env = { ...jobEnv };

const steps = [];
let failed = false;
for (const [index, step] of (job.steps || []).entries()) {
  const id = step.id || `__step${index}`;
  const label = step.name || step.uses || String(step.run).split('\n')[0];
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
    ok = useAction(step);
  } else {
    const outputFile = join(files, `output-${index}`);
    writeFileSync(outputFile, '');
    const script = join(files, `step-${index}.sh`);
    writeFileSync(script, substitute(step.run, { ...ctx, env }));
    const r = spawnSync('bash', ['--noprofile', '--norc', '-eo', 'pipefail', script], {
      cwd: workspace,
      env: {
        ...process.env,
        CI: 'true',
        GITHUB_ACTIONS: 'true',
        GITHUB_EVENT_NAME: name,
        GITHUB_HEAD_REF: github.head_ref,
        GITHUB_BASE_REF: github.base_ref,
        GITHUB_SHA: github.sha,
        GITHUB_WORKSPACE: workspace,
        GITHUB_OUTPUT: outputFile,
        GITHUB_STEP_SUMMARY: summaryFile,
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
result(failed ? 'failure' : 'success', steps, readFileSync(summaryFile, 'utf8'));

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

function useAction(step) {
  const [action] = step.uses.split('@');
  const withs = {};
  for (const [k, v] of Object.entries(step.with || {})) withs[k] = substitute(v, ctx);
  const git = (...a) => spawnSync('git', a, { cwd: workspace, stdio: ['ignore', 'inherit', 'inherit'] }).status === 0;
  switch (action) {
    case 'actions/checkout': {
      if (existsSync(join(workspace, '.git'))) throw new Error(`${workspace} is checked out already`);
      if (withs['fetch-depth'] !== '0') throw new Error('only fetch-depth: 0 is supported');
      const clone = spawnSync('git', ['clone', '--quiet', '--no-checkout', repo, workspace], { stdio: 'inherit' });
      return clone.status === 0 && git('checkout', '--quiet', '--detach', withs.ref || github.sha);
    }
    case 'actions/setup-node': {
      const major = process.versions.node.split('.')[0];
      if (String(withs['node-version']) !== major) {
        console.error(`setup-node: wants node ${withs['node-version']}, this machine has ${process.versions.node}`);
        return false;
      }
      return true;
    }
    default:
      throw new Error(`action ${step.uses} is not known to this runner`);
  }
}
