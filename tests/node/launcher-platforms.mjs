// Checks the npm launcher of ticket-stamp against a node_modules folder laid
// out as npm lays it out (ticket-stamp and every @ticket-stamp/* package,
// unpacked from the tarballs cli/npm/pack writes):
// - lib/platform.js's choice on every platform and architecture name Node
//   reports (process.platform, process.arch), with its fallbacks and its
//   message when none fits;
// - on Windows, the shims npm makes for the `bin` entries (the real
//   cmd-shim package npm uses) run node on the launcher, and win32-x64
//   resolves @ticket-stamp/win32-x64/bin/stamp.exe, a PE x64 file.
// Exits 1 with what differed; prints what it checked.
//
//   node launcher-platforms.mjs NODE_MODULES_PARENT
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { readFileSync, mkdirSync, existsSync } from 'node:fs';
import { join, sep } from 'node:path';
import { spawnSync } from 'node:child_process';
import cmdShim from 'cmd-shim';

const root = process.argv[2];
const modules = join(root, 'node_modules');
const require = createRequire(join(root, 'package.json'));
const launcherDir = join(modules, 'ticket-stamp');
const { choose, RELEASED } = require(join(launcherDir, 'lib/platform.js'));
const { identify } = require(join(process.env.CLI_NPM_DIR, 'binary-format.js'));
const platforms = JSON.parse(readFileSync(join(launcherDir, 'platforms.json'), 'utf8'));
const resolveIn = (id) => require.resolve(id, { paths: [root] });
const missing = (...keys) => (id) => {
  if (keys.some((k) => id.startsWith(`@ticket-stamp/${k}/`))) throw new Error(`Cannot find module '${id}'`);
  return resolveIn(id);
};

assert.deepEqual(platforms, RELEASED, 'the packed launcher lists every released platform');

// Node's names (https://nodejs.org/api/process.html#processplatform, #processarch).
const PLATFORMS = ['aix', 'android', 'darwin', 'freebsd', 'linux', 'openbsd', 'sunos', 'win32', 'cygwin', 'netbsd'];
const ARCHS = ['arm', 'arm64', 'ia32', 'loong64', 'mips', 'mipsel', 'ppc', 'ppc64', 'riscv64', 's390', 's390x', 'x64'];
// What runs where; every other combination has no binary.
const EXPECTED = {
  'darwin-arm64': '@ticket-stamp/darwin-arm64/bin/stamp',
  'darwin-x64': '@ticket-stamp/darwin-x64/bin/stamp',
  'linux-x64': '@ticket-stamp/linux-x64/bin/stamp',
  'linux-arm64': '@ticket-stamp/linux-arm64/bin/stamp',
  'win32-x64': '@ticket-stamp/win32-x64/bin/stamp.exe',
  'win32-arm64': '@ticket-stamp/win32-x64/bin/stamp.exe', // x64 emulation on Windows 11 on Arm
};
const tail = (p) => p.split(sep).join('/').replace(/^.*node_modules\//, '');
let checked = 0;
for (const platform of PLATFORMS) {
  for (const arch of ARCHS) {
    const key = `${platform}-${arch}`;
    const got = choose({ platform, arch, libc: platform === 'linux' ? 'glibc' : null, platforms, env: {}, resolve: resolveIn });
    if (EXPECTED[key]) {
      assert.ok(got.binary, `${key}: expected ${EXPECTED[key]}, got the error: ${got.error}`);
      assert.equal(tail(got.binary), EXPECTED[key], `${key}`);
    } else {
      assert.ok(got.error, `${key}: expected no binary, got ${got.binary}`);
      assert.match(got.error, new RegExp(`^there is no prebuilt binary for ${key} \\(built for: darwin-arm64, darwin-x64, linux-x64, linux-arm64, win32-x64\\)`), key);
      assert.match(got.error, /cargo install .* stamp-cli/, key);
      assert.match(got.error, /TICKET_STAMP_BINARY/, key);
    }
    checked++;
  }
}

// musl (Alpine): the glibc binaries cannot start; said so.
const musl = choose({ platform: 'linux', arch: 'x64', libc: 'musl', platforms, env: {}, resolve: resolveIn });
assert.match(musl.error ?? '', /no prebuilt binary for linux-x64 with musl libc \(Alpine\): the linux binaries need glibc/);
// Apple silicon without the arm64 package, with the x64 one: Rosetta 2.
const rosetta = choose({ platform: 'darwin', arch: 'arm64', platforms, env: {}, resolve: missing('darwin-arm64') });
assert.equal(tail(rosetta.binary ?? ''), '@ticket-stamp/darwin-x64/bin/stamp', 'darwin-arm64 falls back to darwin-x64');
const neither = choose({ platform: 'darwin', arch: 'arm64', platforms, env: {}, resolve: missing('darwin-arm64', 'darwin-x64') });
assert.match(neither.error ?? '', /the package @ticket-stamp\/darwin-arm64 \(or @ticket-stamp\/darwin-x64\) is not installed/);
// Installed with --omit=optional.
const omitted = choose({ platform: 'win32', arch: 'x64', platforms, env: {}, resolve: missing('win32-x64') });
assert.match(omitted.error ?? '', /the package @ticket-stamp\/win32-x64 is not installed\. It is an optional dependency/);
// A release packed for one platform lists only that one.
const single = choose({ platform: 'darwin', arch: 'x64', platforms: ['linux-x64'], env: {}, resolve: resolveIn });
assert.match(single.error ?? '', /no prebuilt binary for darwin-x64 \(built for: linux-x64\)/);
// TICKET_STAMP_BINARY wins everywhere.
const own = choose({ platform: 'aix', arch: 'ppc64', platforms, env: { TICKET_STAMP_BINARY: '/opt/stamp' }, resolve: resolveIn });
assert.equal(own.binary, '/opt/stamp');

// Windows: win32-x64 resolves the .exe, and it is a PE x64 file.
const win = choose({ platform: 'win32', arch: 'x64', platforms, env: {}, resolve: resolveIn });
assert.equal(win.binary, join(modules, '@ticket-stamp', 'win32-x64', 'bin', 'stamp.exe'));
assert.deepEqual(identify(readFileSync(win.binary)), { os: 'win32', cpu: 'x64' });

// The shims npm writes on Windows for each `bin` entry (cmd-shim, as npm
// uses it): stamp.cmd and ticket-stamp.cmd run node on the launcher.
const pkg = JSON.parse(readFileSync(join(launcherDir, 'package.json'), 'utf8'));
assert.deepEqual(Object.keys(pkg.bin).sort(), ['stamp', 'ticket-stamp']);
const bin = join(modules, '.bin-win');
mkdirSync(bin, { recursive: true });
for (const [name, target] of Object.entries(pkg.bin)) {
  await cmdShim(join(launcherDir, target), join(bin, name));
  const cmd = readFileSync(join(bin, `${name}.cmd`), 'utf8');
  const ps1 = readFileSync(join(bin, `${name}.ps1`), 'utf8');
  // The launcher's #!/usr/bin/env node line makes node the program.
  assert.match(cmd, /node\.exe/, `${name}.cmd runs node:\n${cmd}`);
  const script = /"%dp0%\\([^"]+)" %\*/.exec(cmd);
  assert.ok(script, `${name}.cmd passes the launcher and the arguments (%*):\n${cmd}`);
  assert.equal(script[1], '..\\ticket-stamp\\bin\\stamp.js', `${name}.cmd names the launcher with backslashes`);
  assert.match(ps1, /"\$basedir\/\.\.\/ticket-stamp\/bin\/stamp\.js" \$args/, `${name}.ps1:\n${ps1}`);
  // What cmd.exe would run, here: node on that path, relative to the shim.
  const launcher = join(bin, ...script[1].split('\\'));
  assert.ok(existsSync(launcher), `${name}.cmd points at ${launcher}, which exists`);
  const ran = spawnSync(process.execPath, [launcher, '--version'], { encoding: 'utf8' });
  assert.equal(ran.status, 0, `${name}.cmd's command failed: ${ran.stderr}`);
  assert.match(ran.stdout, /^stamp \d+\.\d+\.\d+/, `${name}.cmd's command ran stamp: ${ran.stdout}`);
}
console.log(`launcher-platforms: ${checked} platform/arch names, the fallbacks, the messages and the Windows shims: ok`);
