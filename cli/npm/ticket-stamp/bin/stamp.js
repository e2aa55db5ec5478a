#!/usr/bin/env node
// The `ticket-stamp` / `stamp` command: runs the prebuilt `stamp` binary of
// this platform's package (@ticket-stamp/<os>-<cpu>, an optional dependency
// npm installs only where it fits), with the same arguments, stdio, exit
// code and signals. The pattern esbuild and biome use.
"use strict";

const { spawnSync } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

const platforms = require("../platforms.json");
const key = `${process.platform}-${process.arch}`;
const pkg = `@ticket-stamp/${key}`;
const exe = process.platform === "win32" ? "stamp.exe" : "stamp";

function fail(message) {
  process.stderr.write(`ticket-stamp: ${message}\n`);
  process.exit(1);
}

let binary;
if (process.env.TICKET_STAMP_BINARY) {
  binary = process.env.TICKET_STAMP_BINARY;
} else {
  try {
    binary = require.resolve(`${pkg}/bin/${exe}`);
  } catch {
    if (!platforms.includes(key)) {
      fail(
        `there is no prebuilt binary for ${key} (built for: ${platforms.join(", ")}).\n` +
          "  Build it from source with Rust: cargo install --git <repository> stamp-cli,\n" +
          "  or point TICKET_STAMP_BINARY at a stamp binary."
      );
    }
    fail(
      `the package ${pkg} is not installed. It is an optional dependency of ticket-stamp;\n` +
        "  reinstall without --no-optional / --omit=optional (npm install ticket-stamp)."
    );
  }
}

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
  fail(`cannot run ${path.basename(binary)}: ${result.error.message}`);
}
if (result.signal) {
  process.kill(process.pid, result.signal);
} else {
  process.exit(result.status ?? 1);
}
