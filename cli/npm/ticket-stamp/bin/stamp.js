#!/usr/bin/env node
// The `ticket-stamp` / `stamp` command: runs the prebuilt `stamp` binary of
// this platform's package (@ticket-stamp/<os>-<cpu>, an optional dependency
// npm installs only where it fits; lib/platform.js chooses it), with the
// same arguments, stdio, exit code and signals. The pattern esbuild and
// biome use.
"use strict";

const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const { choose, detectLibc } = require("../lib/platform.js");
const platforms = require("../platforms.json");

function fail(message) {
  process.stderr.write(`ticket-stamp: ${message}\n`);
  process.exit(1);
}

const chosen = choose({
  platform: process.platform,
  arch: process.arch,
  libc: detectLibc(process),
  platforms,
  env: process.env,
  resolve: require.resolve,
});
if (chosen.error) fail(chosen.error);
const binary = chosen.binary;

try {
  // npm may drop the executable bit when it unpacks a tarball.
  fs.accessSync(binary, fs.constants.X_OK);
} catch {
  try {
    fs.chmodSync(binary, 0o755);
  } catch (e) {
    fail(`${binary} is not executable: ${e.message}`);
  }
}

const result = spawnSync(binary, process.argv.slice(2), { stdio: "inherit" });
if (result.error) {
  const rosetta =
    chosen.package === "@ticket-stamp/darwin-x64" && process.arch === "arm64"
      ? " (an x64 binary on Apple silicon needs Rosetta 2: softwareupdate --install-rosetta)"
      : "";
  fail(`cannot run ${path.basename(binary)}: ${result.error.message}${rosetta}`);
}
if (result.signal) {
  process.kill(process.pid, result.signal);
} else {
  process.exit(result.status ?? 1);
}
