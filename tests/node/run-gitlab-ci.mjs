// Runs a GitLab CI pipeline on this machine, the way GitLab and a shell
// runner would run it for one event, so that the pipeline files we ship
// (conf/gitlab-ci/ticket-stamp.yml, the release pipeline in .gitlab-ci.yml)
// are tested as written. The configuration is read from the repository at
// the event's commit, as GitLab reads it.
//
// What it implements, as GitLab documents it:
// - `include:` local files (a string, or `- local: path`), deep-merged under
//   the including file; `default:` (image, before_script, after_script,
//   interruptible, tags); global and job `variables`, expanded (`$VAR`,
//   `${VAR}`, `$$`) in GitLab's order of precedence: project variables, then
//   dotenv reports, job variables, global variables, predefined variables;
// - `workflow:rules` and job `rules` (`if`, `when`, `allow_failure`,
//   `variables`); `if` expressions with `==`, `!=`, `=~`, `!~` (`/re/` and
//   `/re/i`), `&&`, `||`, parentheses, `$VAR` (undefined is null), `null`,
//   quoted strings; jobs without rules run in branch and tag pipelines only;
// - `when: on_success | on_failure | manual | always | never`,
//   `allow_failure` (a manual job from `rules` blocks unless it allows
//   failure; one with `when: manual` on the job does not), manual jobs
//   run only when asked (`--play JOB`);
// - stages (`.pre`, `stages`, `.post`), `needs` (with `artifacts`),
//   `parallel: matrix` (jobs named `job: [a, b]`, the matrix's variables,
//   `$VAR` in `tags`), `artifacts: paths` (with `*`), `artifacts: reports:
//   dotenv`, `resource_group` (recorded; this runner runs one job at a
//   time), `id_tokens` (an unsigned stand-in JWT with the `aud`),
//   `interruptible`;
// - a checkout per job: GIT_STRATEGY fetch/clone (a fresh folder, `git
//   init`, the refs GitLab fetches for the pipeline with GIT_DEPTH, default
//   20, then `git checkout -f` of the commit, detached) or none;
// - `before_script` + `script` in one `bash` with `set -eo pipefail`, each
//   line echoed, and `after_script` in another, as GitLab's bash shell does;
//   on runners tagged `saas-windows-*`, whose shell is PowerShell, only a
//   subset of PowerShell that has one meaning here (plain commands,
//   `$env:NAME`, New-Item -ItemType Directory, Copy-Item, Chocolatey's
//   refreshenv), translated to bash line by line;
// - masked variables replaced by [MASKED] in the log (8 characters or more,
//   one line, as GitLab requires);
// - `image`: `node:N` needs this machine's node to be major N, `rust:*`
//   needs cargo on PATH, `macos-*` only on a saas-macos runner; no image on
//   Windows runners. Runner tags must be GitLab's hosted-runner tags.
//
// Anything else (a keyword, an expression operator, an include kind, a
// YAML tag such as !reference) is refused loudly, so a pipeline this runner
// misreads fails its test instead of passing it.
//
// node run-gitlab-ci.mjs --repo GIT_DIR --event EVENT.json --builds DIR
//   [--variables JSON] [--play JOB]...
// EVENT.json: {source, sha, ref?, tag?, merge_request?: {iid, source_branch,
//   target_branch, labels, title}, project: {path, default_branch},
//   open_merge_requests?}
// --variables: the project's CI/CD variables, {NAME: "value"} or
//   {NAME: {value, masked}}.
// Prints the jobs' logs on stderr and one JSON line on stdout:
// {pipeline: "created"|"not created", status, jobs: [{name, stage, status,
//   when, allow_failure, tags, resource_group, variables?}]}

import { readFileSync, writeFileSync, mkdirSync, existsSync, readdirSync, statSync, copyFileSync, chmodSync } from 'node:fs';
import { join, dirname, resolve } from 'node:path';
import { spawnSync } from 'node:child_process';
import { randomInt } from 'node:crypto';
import yaml from 'js-yaml';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  if (i < 0) {
    if (dflt === undefined) throw new Error(`--${name} is required`);
    return dflt;
  }
  return args[i + 1];
};
const plays = args.flatMap((a, i) => (a === '--play' ? [args[i + 1]] : []));
const repo = resolve(opt('repo'));
const event = JSON.parse(readFileSync(opt('event'), 'utf8'));
const builds = resolve(opt('builds'));
const projectVars = {};
const masked = new Set();
for (const [k, v] of Object.entries(JSON.parse(opt('variables', '{}')))) {
  const value = typeof v === 'object' ? String(v.value) : String(v);
  projectVars[k] = value;
  if (typeof v === 'object' && v.masked) {
    if (value.length < 8 || /\n/.test(value)) throw new Error(`variable ${k} cannot be masked: GitLab needs 8 characters or more on one line`);
    masked.add(value);
  }
}

function refuse(what) {
  throw new Error(`run-gitlab-ci: ${what} is not implemented by this runner`);
}

// ------------------------------------------------------------ configuration

const git = (cwd, ...a) => {
  const r = spawnSync('git', a, { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`git ${a.join(' ')}: ${r.stderr}`);
  return r.stdout;
};
const readAtCommit = (path) => {
  const r = spawnSync('git', ['show', `${event.sha}:${path.replace(/^\/+/, '')}`], { cwd: repo, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${path} is not in the repository at ${event.sha}: ${r.stderr.trim()}`);
  return r.stdout;
};
const load = (path) => {
  const doc = yaml.load(readAtCommit(path));
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`${path} is not a mapping`);
  return doc;
};
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const deepMerge = (base, over) => {
  const out = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = isObject(v) && isObject(out[k]) ? deepMerge(out[k], v) : v;
  return out;
};
function resolveIncludes(doc, depth = 0) {
  if (!('include' in doc)) return doc;
  if (depth > 10) throw new Error('include: nested more than 10 levels');
  const { include, ...rest } = doc;
  let merged = {};
  for (const item of Array.isArray(include) ? include : [include]) {
    let path;
    if (typeof item === 'string') {
      if (/^https?:/.test(item)) refuse('include of a remote URL');
      path = item;
    } else if (isObject(item) && Object.keys(item).join() === 'local') {
      path = item.local;
    } else {
      refuse(`include ${JSON.stringify(item)} (only local files are)`);
    }
    merged = deepMerge(merged, resolveIncludes(load(path), depth + 1));
  }
  return deepMerge(merged, rest);
}
const config = resolveIncludes(load('.gitlab-ci.yml'));

const GLOBAL_KEYS = new Set(['stages', 'variables', 'default', 'workflow']);
const JOB_KEYS = new Set(['stage', 'image', 'script', 'before_script', 'after_script', 'variables', 'rules', 'when',
  'allow_failure', 'needs', 'artifacts', 'resource_group', 'tags', 'parallel', 'id_tokens', 'interruptible']);
const DEFAULT_KEYS = new Set(['image', 'before_script', 'after_script', 'interruptible', 'tags']);
const RESERVED = new Set(['image', 'services', 'cache', 'before_script', 'after_script', 'types', 'pages', 'spec']);
for (const [k, v] of Object.entries(config.default || {})) if (!DEFAULT_KEYS.has(k)) refuse(`default:${k}`);
for (const k of Object.keys(config.workflow || {})) if (k !== 'rules') refuse(`workflow:${k}`);
const stages = ['.pre', ...(config.stages || ['build', 'test', 'deploy']), '.post'];

// ------------------------------------------------------------ variables

// GitLab expands $VAR, ${VAR} (and $$ as a dollar) in variable values and
// in some keywords; an unknown variable expands to nothing.
const expand = (text, vars) =>
  String(text).replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g, (m, a, b) =>
    m === '$$' ? '$' : (vars[a ?? b] ?? ''));
const layer = (vars, defined) => {
  const out = { ...vars };
  for (const [k, v] of Object.entries(defined || {})) {
    if (isObject(v)) {
      const extra = Object.keys(v).filter((x) => !['value', 'description', 'expand'].includes(x));
      if (extra.length) refuse(`variables:${k}:${extra[0]}`);
      out[k] = v.expand === false ? String(v.value ?? '') : expand(v.value ?? '', out);
    } else {
      out[k] = expand(v ?? '', out);
    }
  }
  return out;
};

const mr = event.merge_request;
const source = event.source;
const slug = (s) => String(s).toLowerCase().replace(/[^a-z0-9]+/g, '-').slice(0, 63).replace(/^-|-$/g, '');
const pipelineId = String(randomInt(100000, 999999));
const refName = mr ? mr.source_branch : event.tag ?? event.ref;
const predefined = {
  CI: 'true',
  GITLAB_CI: 'true',
  CI_SERVER: 'yes',
  CI_PIPELINE_SOURCE: source,
  CI_PIPELINE_ID: pipelineId,
  CI_PIPELINE_IID: String(randomInt(1, 9999)),
  CI_COMMIT_SHA: event.sha,
  CI_COMMIT_SHORT_SHA: event.sha.slice(0, 8),
  CI_COMMIT_REF_NAME: refName,
  CI_COMMIT_REF_SLUG: slug(refName),
  CI_DEFAULT_BRANCH: event.project.default_branch,
  CI_PROJECT_PATH: event.project.path,
  CI_PROJECT_NAME: event.project.path.split('/').pop(),
  CI_PROJECT_NAMESPACE: event.project.path.split('/').slice(0, -1).join('/'),
  CI_BUILDS_DIR: builds,
};
if (event.tag) predefined.CI_COMMIT_TAG = event.tag;
else if (!mr) predefined.CI_COMMIT_BRANCH = event.ref;
if (event.open_merge_requests) predefined.CI_OPEN_MERGE_REQUESTS = event.open_merge_requests;
if (mr) {
  Object.assign(predefined, {
    CI_MERGE_REQUEST_ID: String(mr.iid + 1000),
    CI_MERGE_REQUEST_IID: String(mr.iid),
    CI_MERGE_REQUEST_SOURCE_BRANCH_NAME: mr.source_branch,
    CI_MERGE_REQUEST_SOURCE_BRANCH_SHA: '',
    CI_MERGE_REQUEST_TARGET_BRANCH_NAME: mr.target_branch,
    CI_MERGE_REQUEST_TITLE: mr.title ?? '',
    CI_MERGE_REQUEST_EVENT_TYPE: 'detached',
    CI_MERGE_REQUEST_PROJECT_PATH: event.project.path,
  });
  if (mr.labels?.length) predefined.CI_MERGE_REQUEST_LABELS = mr.labels.join(',');
}
if (source === 'merge_request_event' && !mr) throw new Error('a merge_request_event needs merge_request in the event');

// ------------------------------------------------------------ rules:if

function tokenize(src) {
  const out = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    if (/\s/.test(c)) { i++; continue; }
    const two = src.slice(i, i + 2);
    if (['==', '!=', '=~', '!~', '&&', '||'].includes(two)) { out.push({ op: two }); i += 2; continue; }
    if (c === '(' || c === ')') { out.push({ op: c }); i++; continue; }
    if (c === '"' || c === "'") {
      const end = src.indexOf(c, i + 1);
      if (end < 0) throw new Error(`unterminated string in: ${src}`);
      out.push({ value: src.slice(i + 1, end) });
      i = end + 1;
      continue;
    }
    if (c === '/') {
      let j = i + 1;
      while (j < src.length && src[j] !== '/') j += src[j] === '\\' ? 2 : 1;
      if (j >= src.length) throw new Error(`unterminated /regex/ in: ${src}`);
      const flags = /^[a-z]*/.exec(src.slice(j + 1))[0];
      if (flags && flags !== 'i') refuse(`regex flags /${flags} (only /i is)`);
      out.push({ regex: new RegExp(src.slice(i + 1, j), flags) });
      i = j + 1 + flags.length;
      continue;
    }
    const v = /^\$\{([A-Za-z_][A-Za-z0-9_]*)\}|^\$([A-Za-z_][A-Za-z0-9_]*)/.exec(src.slice(i));
    if (v) { out.push({ variable: v[1] ?? v[2] }); i += v[0].length; continue; }
    if (src.startsWith('null', i) && !/[A-Za-z0-9_]/.test(src[i + 4] ?? '')) { out.push({ value: null }); i += 4; continue; }
    refuse(`the expression syntax at "${src.slice(i)}" (in: ${src})`);
  }
  return out;
}

function evaluate(src, vars) {
  const tokens = tokenize(src);
  let at = 0;
  const peek = () => tokens[at];
  const operand = () => {
    const t = tokens[at++];
    if (!t) throw new Error(`unexpected end of: ${src}`);
    if (t.op === '(') {
      const v = or();
      if (tokens[at++]?.op !== ')') throw new Error(`missing ) in: ${src}`);
      return v;
    }
    if ('variable' in t) return { value: t.variable in vars ? vars[t.variable] : null };
    if ('value' in t) return { value: t.value };
    if ('regex' in t) return { regex: t.regex };
    throw new Error(`unexpected ${t.op} in: ${src}`);
  };
  const truthy = (o) => (o.regex ? refuse(`a bare /regex/ (in: ${src})`) : o.value !== null && o.value !== '' && o.value !== false);
  const comparison = () => {
    const left = operand();
    const op = peek()?.op;
    if (!['==', '!=', '=~', '!~'].includes(op)) return { value: truthy(left) };
    at++;
    const right = operand();
    if (op === '==' || op === '!=') {
      if (left.regex || right.regex) refuse(`${op} with a /regex/ (in: ${src})`);
      const same = left.value === right.value;
      return { value: op === '==' ? same : !same };
    }
    if (!right.regex) refuse(`${op} with a right side that is not a /regex/ literal (in: ${src})`);
    const matched = left.value !== null && right.regex.test(String(left.value));
    return { value: op === '=~' ? matched : !matched };
  };
  const and = () => {
    let v = comparison();
    while (peek()?.op === '&&') { at++; const w = comparison(); v = { value: truthy(v) && truthy(w) }; }
    return v;
  };
  const or = () => {
    let v = and();
    while (peek()?.op === '||') { at++; const w = and(); v = { value: truthy(v) || truthy(w) }; }
    return v;
  };
  const v = or();
  if (at !== tokens.length) throw new Error(`unexpected ${JSON.stringify(tokens[at])} in: ${src}`);
  return truthy(v);
}

const WHENS = ['on_success', 'on_failure', 'manual', 'always', 'never', 'delayed'];
// The first rule that matches: {when, allow_failure, variables}, or null.
function firstRule(rules, vars, where) {
  if (!Array.isArray(rules)) throw new Error(`${where}: rules must be a list`);
  for (const rule of rules) {
    for (const k of Object.keys(rule)) if (!['if', 'when', 'allow_failure', 'variables'].includes(k)) refuse(`${where}: rules:${k}`);
    if (rule.when && (!WHENS.includes(rule.when) || rule.when === 'delayed')) refuse(`${where}: when: ${rule.when}`);
    if (rule.if === undefined || evaluate(rule.if, vars)) return rule;
  }
  return null;
}

// ------------------------------------------------------------ the pipeline

const log = (line) => process.stderr.write(`${line}\n`);
const mask = (text) => {
  let out = text;
  for (const m of masked) out = out.split(m).join('[MASKED]');
  return out;
};
const finish = (summary) => {
  console.log(JSON.stringify(summary));
  process.exit(0);
};

const globalVars = layer(predefined, config.variables);
if (config.workflow?.rules) {
  const rule = firstRule(config.workflow.rules, layer(globalVars, projectVars), 'workflow');
  if (!rule || rule.when === 'never') finish({ pipeline: 'not created', status: null, jobs: [] });
  if (rule.when && !['always', 'never'].includes(rule.when)) throw new Error(`workflow: when: ${rule.when} is not valid`);
  Object.assign(globalVars, layer(globalVars, rule.variables));
}

const HOSTED_TAGS = ['saas-linux-small-amd64', 'saas-linux-medium-amd64', 'saas-linux-large-amd64', 'saas-linux-small-arm64',
  'saas-linux-medium-arm64', 'saas-linux-large-arm64', 'saas-macos-medium-m1', 'saas-macos-large-m2pro', 'saas-windows-medium-amd64'];
const flatten = (lines, where) => {
  if (lines === undefined || lines === null) return [];
  if (typeof lines === 'string') return [lines];
  if (!Array.isArray(lines)) throw new Error(`${where} must be a string or a list`);
  return lines.flatMap((l) => flatten(l, where));
};

// Jobs, with parallel:matrix expanded.
const jobs = [];
for (const [name, body] of Object.entries(config)) {
  if (GLOBAL_KEYS.has(name) || name.startsWith('.')) continue;
  if (RESERVED.has(name)) refuse(`the global keyword ${name} (use default:)`);
  if (!isObject(body)) throw new Error(`${name} is not a job`);
  for (const k of Object.keys(body)) if (!JOB_KEYS.has(k)) refuse(`${name}: the keyword ${k}`);
  if (!body.script) throw new Error(`${name}: a job needs a script`);
  const stage = body.stage ?? 'test';
  if (!stages.includes(stage)) throw new Error(`${name}: stage ${stage} is not in stages (${stages.join(', ')})`);
  let instances = [{ name, matrix: {} }];
  if (body.parallel !== undefined) {
    if (!isObject(body.parallel) || Object.keys(body.parallel).join() !== 'matrix') refuse(`${name}: parallel other than parallel:matrix`);
    instances = [];
    for (const entry of body.parallel.matrix) {
      let combos = [{}];
      for (const [k, v] of Object.entries(entry)) {
        combos = combos.flatMap((c) => (Array.isArray(v) ? v : [v]).map((x) => ({ ...c, [k]: String(x) })));
      }
      for (const c of combos) instances.push({ name: `${name}: [${Object.values(c).join(', ')}]`, matrix: c });
    }
  }
  instances.forEach((inst, i) =>
    jobs.push({ ...inst, base: name, body, stage, index: i + 1, total: instances.length, order: jobs.length }));
}

// Which jobs this pipeline has, and how.
const planned = [];
for (const job of jobs) {
  const b = job.body;
  let vars = layer(globalVars, b.variables);
  vars = { ...vars, ...job.matrix };
  let when = b.when ?? 'on_success';
  let allowFailure = b.allow_failure ?? (when === 'manual');
  if (!WHENS.includes(when) || when === 'delayed') refuse(`${job.name}: when: ${when}`);
  if (b.rules !== undefined) {
    if (b.when !== undefined) throw new Error(`${job.name}: when: on the job and rules: together (put when in the rules)`);
    const rule = firstRule(b.rules, layer(vars, projectVars), job.name);
    if (!rule) continue;
    when = rule.when ?? 'on_success';
    allowFailure = rule.allow_failure ?? b.allow_failure ?? false;
    vars = layer(vars, rule.variables);
  } else if (source === 'merge_request_event') {
    continue; // a job without rules is `only: [branches, tags]`
  }
  if (when === 'never') continue;
  if (typeof allowFailure !== 'boolean') refuse(`${job.name}: allow_failure other than true/false`);
  planned.push({ ...job, vars, when, allowFailure });
}
if (planned.length === 0) finish({ pipeline: 'not created', status: null, jobs: [] });
for (const p of plays) {
  const job = planned.find((j) => j.name === p || j.base === p);
  if (!job) throw new Error(`--play ${p}: no such job in this pipeline`);
  if (job.when !== 'manual') throw new Error(`--play ${p}: the job is not manual in this pipeline (when: ${job.when})`);
}

const needsOf = (job) => {
  if (job.body.needs === undefined) return null;
  return job.body.needs.map((n) => {
    const need = typeof n === 'string' ? { job: n } : n;
    for (const k of Object.keys(need)) if (!['job', 'artifacts', 'optional'].includes(k)) refuse(`${job.name}: needs:${k}`);
    const found = planned.filter((j) => j.name === need.job || j.base === need.job);
    if (!found.length && !need.optional) throw new Error(`${job.name}: needs ${need.job}, which is not in this pipeline`);
    for (const f of found) {
      if (stages.indexOf(f.stage) > stages.indexOf(job.stage)) throw new Error(`${job.name}: needs ${f.name} of a later stage`);
    }
    return { jobs: found, artifacts: need.artifacts ?? true };
  });
};

// Stage order, then `needs` (a job runs after what it needs).
planned.sort((a, b) => stages.indexOf(a.stage) - stages.indexOf(b.stage) || a.order - b.order);
const ran = new Map(); // name -> {status, allowFailure, artifacts dir, dotenv}
const results = [];
let jobCount = 0;
for (const job of planned) {
  const needs = needsOf(job);
  const upstream = needs
    ? needs.flatMap((n) => n.jobs)
    : planned.filter((j) => stages.indexOf(j.stage) < stages.indexOf(job.stage));
  const states = upstream.map((j) => ran.get(j.name));
  // A failed job (unless it may fail) skips what follows; a job waits for
  // a manual job it needs, and for a blocking manual job of an earlier stage.
  const failedBefore = states.some((s) => (s?.status === 'failed' && !s.allowFailure) || s?.status === 'skipped');
  const blockedBefore =
    states.some((s) => s?.status === 'blocked') ||
    states.some((s) => s?.status === 'manual' && (needs !== null || !s.allowFailure));
  const summary = {
    name: job.name, stage: job.stage, when: job.when, allow_failure: job.allowFailure,
    tags: (job.body.tags ?? config.default?.tags ?? []).map((t) => expand(t, job.vars)),
    resource_group: job.body.resource_group === undefined ? null : expand(job.body.resource_group, job.vars),
  };
  let status;
  if (blockedBefore) status = 'blocked';
  else if (job.when === 'always') status = 'run';
  else if (job.when === 'on_failure') status = failedBefore ? 'run' : 'skipped';
  else if (failedBefore) status = 'skipped';
  else if (job.when === 'manual') status = plays.includes(job.name) || plays.includes(job.base) ? 'run' : 'manual';
  else status = 'run'; // on_success
  if (status === 'run') {
    const artifactSources = needs
      ? needs.filter((n) => n.artifacts).flatMap((n) => n.jobs)
      : upstream;
    status = runJob(job, summary, artifactSources.map((j) => ran.get(j.name)).filter((s) => s?.status === 'success'), ++jobCount);
  }
  ran.set(job.name, { ...(ran.get(job.name) || {}), status, allowFailure: job.allowFailure });
  results.push({ ...summary, status });
}
const failed = results.some((r) => r.status === 'failed' && !r.allow_failure);
const blocked = results.some((r) => (r.status === 'manual' && !r.allow_failure) || r.status === 'blocked');
finish({ pipeline: 'created', status: failed ? 'failed' : blocked ? 'blocked' : 'success', jobs: results });

// ------------------------------------------------------------ a job

function runJob(job, summary, upstream, n) {
  const b = job.body;
  const tags = summary.tags;
  for (const t of tags) if (!HOSTED_TAGS.includes(t)) refuse(`${job.name}: runner tag ${t} (GitLab's hosted runners are ${HOSTED_TAGS.join(', ')})`);
  const windows = tags.some((t) => t.startsWith('saas-windows-'));
  const mac = tags.some((t) => t.startsWith('saas-macos-'));
  const image = b.image ?? config.default?.image;
  log(`\n=== job ${job.name} (stage ${job.stage}${tags.length ? `, runner ${tags.join(' ')}` : ''})`);
  if (image !== undefined) {
    const name = typeof image === 'string' ? image : image?.name;
    if (typeof image !== 'string' && Object.keys(image).some((k) => k !== 'name')) refuse(`${job.name}: image options`);
    if (windows) throw new Error(`${job.name}: GitLab's Windows runners take no image`);
    const node = /^node:(\d+)(-|$)/.exec(name);
    if (node) {
      if (node[1] !== process.versions.node.split('.')[0]) {
        log(`image ${name}: this machine's node is ${process.versions.node}`);
        return 'failed';
      }
    } else if (/^rust:/.test(name)) {
      if (spawnSync('cargo', ['--version']).status !== 0) {
        log(`image ${name}: no cargo on this machine's PATH`);
        return 'failed';
      }
    } else if (/^macos-/.test(name)) {
      if (!mac) throw new Error(`${job.name}: image ${name} needs a saas-macos runner`);
    } else {
      refuse(`${job.name}: image ${name} (node:N, rust:*, macos-* are known)`);
    }
  }

  // Variables, in GitLab's order of precedence.
  const dotenv = {};
  for (const u of upstream) Object.assign(dotenv, u.dotenv || {});
  const dir = join(builds, `${n}-${slug(job.name)}`, event.project.path);
  mkdirSync(dir, { recursive: true });
  let vars = { ...job.vars, ...dotenv, ...projectVars };
  vars = {
    ...vars,
    CI_PROJECT_DIR: dir,
    CI_JOB_NAME: job.name,
    CI_JOB_NAME_SLUG: slug(job.name),
    CI_JOB_STAGE: job.stage,
    CI_JOB_ID: String(randomInt(1000000, 9999999)),
    CI_JOB_MANUAL: job.when === 'manual' ? 'true' : undefined,
    CI_NODE_INDEX: job.total > 1 ? String(job.index) : undefined,
    CI_NODE_TOTAL: String(job.total),
    CI_RUNNER_TAGS: JSON.stringify(tags),
  };
  for (const [k, v] of Object.entries(b.id_tokens || {})) {
    if (!isObject(v) || Object.keys(v).join() !== 'aud') refuse(`${job.name}: id_tokens:${k} other than aud`);
    const part = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
    vars[k] = `${part({ alg: 'none' })}.${part({ aud: v.aud, iss: 'run-gitlab-ci', sub: `project_path:${event.project.path}` })}.`;
  }
  for (const k of Object.keys(vars)) if (vars[k] === undefined) delete vars[k];

  // The checkout.
  const strategy = vars.GIT_STRATEGY ?? 'fetch';
  if (strategy === 'fetch' || strategy === 'clone') {
    const depth = vars.GIT_DEPTH ?? '20';
    const refspecs = [`+${event.sha}:refs/pipelines/${pipelineId}`];
    if (event.tag) refspecs.push(`+refs/tags/${event.tag}:refs/tags/${event.tag}`);
    else refspecs.push(`+refs/heads/${refName}:refs/remotes/origin/${refName}`);
    git(dir, 'init', '--quiet');
    git(dir, 'remote', 'add', 'origin', repo);
    git(dir, 'fetch', '--quiet', ...(depth === '0' ? [] : ['--depth', depth]), '--prune', 'origin', ...refspecs);
    git(dir, 'checkout', '-f', '-q', event.sha);
  } else if (strategy !== 'none') {
    refuse(`GIT_STRATEGY ${strategy}`);
  }
  for (const u of upstream) {
    for (const f of u.artifacts || []) {
      const to = join(dir, f.path);
      mkdirSync(dirname(to), { recursive: true });
      copyFileSync(f.from, to);
      chmodSync(to, f.mode);
    }
  }

  const env = { ...process.env, ...vars };
  const before = flatten(b.before_script ?? config.default?.before_script, 'before_script');
  const main = flatten(b.script, 'script');
  const after = flatten(b.after_script ?? config.default?.after_script, 'after_script');
  const ok = shell([...before, ...main], dir, env, windows, `${job.name}-script`);
  if (after.length) shell(after, dir, { ...env, CI_JOB_STATUS: ok ? 'success' : 'failed' }, windows, `${job.name}-after`);
  const status = ok ? 'success' : 'failed';
  log(`=== job ${job.name}: ${status}`);

  // Artifacts of a finished job (on success, GitLab's default).
  const state = { artifacts: [], dotenv: {} };
  const a = b.artifacts;
  if (a !== undefined && ok) {
    for (const k of Object.keys(a)) if (!['paths', 'reports', 'expire_in', 'name'].includes(k)) refuse(`${job.name}: artifacts:${k}`);
    for (const k of Object.keys(a.reports || {})) if (k !== 'dotenv') refuse(`${job.name}: artifacts:reports:${k}`);
    for (const pattern of a.paths || []) {
      const found = glob(dir, expand(pattern, vars));
      if (!found.length) log(`WARNING: ${pattern}: no matching files`);
      for (const path of found) state.artifacts.push({ path, from: join(dir, path), mode: statSync(join(dir, path)).mode & 0o777 });
    }
    for (const file of flatten(a.reports?.dotenv, 'artifacts:reports:dotenv')) {
      const path = join(dir, file);
      if (!existsSync(path)) { log(`WARNING: dotenv ${file} was not written`); continue; }
      for (const line of readFileSync(path, 'utf8').split('\n')) {
        if (!line.trim()) continue;
        const m = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/.exec(line);
        if (!m) throw new Error(`${job.name}: the dotenv report ${file} has an invalid line: ${line}`);
        state.dotenv[m[1]] = m[2];
      }
    }
    // Copy them out: a later job of this runner starts in a fresh folder.
    const keep = join(builds, 'artifacts', slug(job.name));
    for (const f of state.artifacts) {
      const to = join(keep, f.path);
      mkdirSync(dirname(to), { recursive: true });
      copyFileSync(f.from, to);
      f.from = to;
    }
  }
  ran.set(job.name, { ...state });
  return status;
}

// Files under `dir` matching a path pattern (`*` within one segment; a
// folder takes everything under it).
function glob(dir, pattern) {
  const parts = pattern.replace(/\/+$/, '').split('/');
  let paths = [''];
  for (const part of parts) {
    const re = new RegExp(`^${part.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')}$`);
    paths = paths.flatMap((p) => {
      const here = join(dir, p);
      if (!existsSync(here) || !statSync(here).isDirectory()) return [];
      return readdirSync(here).filter((e) => re.test(e)).map((e) => (p ? `${p}/${e}` : e));
    });
  }
  const files = [];
  const walk = (p) => {
    const s = statSync(join(dir, p));
    if (s.isDirectory()) for (const e of readdirSync(join(dir, p))) walk(`${p}/${e}`);
    else files.push(p);
  };
  paths.forEach(walk);
  return files;
}

// Runs script lines as GitLab's shells do, the output masked; true on success.
function shell(lines, cwd, env, windows, name) {
  const body = windows ? lines.map(powershell) : lines;
  const script = ['set -eo pipefail', 'set +o noclobber'];
  for (const line of body) {
    const shown = windows ? lines[body.indexOf(line)] : line;
    script.push(`echo ${shq(`$ ${shown.split('\n')[0]}${shown.includes('\n') ? ' # collapsed multi-line command' : ''}`)}`);
    script.push(line);
  }
  const file = join(builds, `${slug(name)}.sh`);
  writeFileSync(file, `${script.join('\n')}\n`);
  const r = spawnSync('bash', ['--noprofile', '--norc', file], { cwd, env, encoding: 'utf8', maxBuffer: 1 << 28 });
  process.stderr.write(mask(r.stdout));
  process.stderr.write(mask(r.stderr));
  return r.status === 0;
}
function shq(s) {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

// One line of PowerShell, in the subset that has one meaning here, as bash.
// GitLab's PowerShell fails the job when a line's command fails, as `set -e`.
function powershell(line) {
  if (line.includes('\n')) refuse(`PowerShell: a multi-line command (${line})`);
  const words = line.trim().split(/\s+/);
  const word = (w) => {
    if (!/^([A-Za-z0-9_.\/:=@+,-]|\$env:[A-Za-z_][A-Za-z0-9_]*)+$/.test(w)) refuse(`PowerShell: the word ${w} (plain words and $env:NAME only; in: ${line})`);
    return `"${w.replace(/\$env:([A-Za-z_][A-Za-z0-9_]*)/g, '${$1}')}"`;
  };
  const [cmd, ...rest] = words;
  switch (cmd) {
    case 'New-Item': {
      const m = /^New-Item -ItemType Directory -Force -Path (\S+)$/.exec(line.trim());
      if (!m) refuse(`PowerShell: New-Item other than -ItemType Directory -Force -Path P (${line})`);
      return `mkdir -p ${word(m[1])} >/dev/null`;
    }
    case 'Copy-Item': {
      if (rest.length !== 2) refuse(`PowerShell: Copy-Item other than Copy-Item FROM TO (${line})`);
      return `cp ${rest.map(word).join(' ')}`;
    }
    case 'Import-Module':
      if (line.trim() !== 'Import-Module $env:ChocolateyInstall/helpers/chocolateyProfile.psm1') refuse(`PowerShell: ${line}`);
      return 'true # Chocolatey profile: defines refreshenv';
    case 'refreshenv':
      if (rest.length) refuse(`PowerShell: ${line}`);
      return 'true # refreshenv: PATH already has what Chocolatey installed';
    default:
      if (/^[A-Z][a-z]+-[A-Z]/.test(cmd)) refuse(`PowerShell: the cmdlet ${cmd}`);
      return words.map(word).join(' ');
  }
}
