// Which @ticket-stamp/<os>-<cpu> package runs `stamp` on this machine.
// Pure: everything it looks at is passed in, so every platform and
// architecture name Node reports can be tested on one machine
// (tests/node/launcher-platforms.mjs). bin/stamp.js calls it.
"use strict";

// What a release builds (cli/npm/pack --binaries, .github/workflows/release-cli.yml).
const RELEASED = ["darwin-arm64", "darwin-x64", "linux-x64", "linux-arm64", "win32-x64"];

// Where the machine runs another architecture's binaries, in the order to
// try. Windows 11 on Arm runs x64 programs by emulation, and npm installs
// win32-x64 there (its package.json lists cpu arm64 too). macOS on Apple
// silicon runs x64 programs with Rosetta 2: npm installs darwin-arm64 there,
// so darwin-x64 is tried only when the arm64 package is missing and the x64
// one is installed (a node_modules copied from an Intel Mac).
const FALLBACKS = {
  "win32-arm64": ["win32-x64"],
  "darwin-arm64": ["darwin-x64"],
};

// The packages to try, best first, for a platform and architecture as Node
// reports them (process.platform, process.arch). `libc` is "glibc" or
// "musl" on Linux: the linux binaries are built against glibc (Ubuntu
// runners), and on musl (Alpine) they cannot start, so none fits there.
function candidates(platform, arch, libc) {
  const key = `${platform}-${arch}`;
  if (platform === "linux" && libc === "musl") return [];
  return [key, ...(FALLBACKS[key] || [])];
}

// The executable's name inside a platform package.
function executable(key) {
  return key.startsWith("win32-") ? "stamp.exe" : "stamp";
}

// The binary to run, or the message to print when there is none.
//   platform, arch, libc: as above
//   platforms: the platform names this release was packed for (platforms.json)
//   env: the environment (TICKET_STAMP_BINARY wins over everything)
//   resolve(id): require.resolve, or throws when the package is not installed
// Returns { binary, package } or { error }.
function choose({ platform, arch, libc, platforms, env, resolve }) {
  if (env && env.TICKET_STAMP_BINARY) {
    return { binary: env.TICKET_STAMP_BINARY, package: null };
  }
  const key = `${platform}-${arch}`;
  const fits = candidates(platform, arch, libc).filter((k) => platforms.includes(k));
  for (const k of fits) {
    try {
      return { binary: resolve(`@ticket-stamp/${k}/bin/${executable(k)}`), package: `@ticket-stamp/${k}` };
    } catch {
      // not installed: try the next
    }
  }
  const build =
    "  Build it from source with Rust (https://rustup.rs): cargo install --git <repository> stamp-cli,\n" +
    "  then point TICKET_STAMP_BINARY at the binary (or put it on PATH and run `stamp`).";
  if (platform === "linux" && libc === "musl") {
    return {
      error:
        `there is no prebuilt binary for ${key} with musl libc (Alpine): the linux binaries need glibc ` +
        `(built for: ${platforms.join(", ")}).\n${build}`,
    };
  }
  if (fits.length === 0) {
    return { error: `there is no prebuilt binary for ${key} (built for: ${platforms.join(", ")}).\n${build}` };
  }
  const names = fits.map((k) => `@ticket-stamp/${k}`);
  return {
    error:
      `the package ${names.join(" (or " ) + (names.length > 1 ? ")" : "")} is not installed. ` +
      "It is an optional dependency of ticket-stamp;\n" +
      "  reinstall without --no-optional / --omit=optional (npm install ticket-stamp).",
  };
}

// "glibc" or "musl" on Linux (what Node's own report says), null elsewhere.
function detectLibc(proc) {
  if (proc.platform !== "linux") return null;
  try {
    const header = proc.report.getReport().header;
    return header.glibcVersionRuntime ? "glibc" : "musl";
  } catch {
    return "glibc";
  }
}

module.exports = { RELEASED, FALLBACKS, candidates, executable, choose, detectLibc };
