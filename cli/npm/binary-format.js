// Says which platform an executable was built for, from its header, so that
// cli/npm/pack never puts one platform's binary in another's package (a
// release pipeline that mixes up its artifacts fails here, not on a
// developer's machine).
//
//   node cli/npm/binary-format.js FILE PLATFORM   exit 0 when FILE is a PLATFORM executable,
//                                                 else 1 and what it is instead
"use strict";

const fs = require("node:fs");

// ELF e_machine, Mach-O cputype, PE Machine, per Node's arch name.
const ELF = { 0x3e: "x64", 0xb7: "arm64" };
const MACHO = { 0x01000007: "x64", 0x0100000c: "arm64" };
const PE = { 0x8664: "x64", 0xaa64: "arm64" };

// { os, cpu } (Node's names: linux, darwin, win32; x64, arm64), or
// { error } saying what the bytes are.
function identify(bytes) {
  const b = Buffer.from(bytes);
  if (b.length >= 20 && b.readUInt32BE(0) === 0x7f454c46) {
    if (b[4] !== 2) return { error: "a 32-bit ELF executable" };
    if (b[5] !== 1) return { error: "a big-endian ELF executable" };
    const machine = b.readUInt16LE(18);
    const cpu = ELF[machine];
    return cpu ? { os: "linux", cpu } : { error: `an ELF executable for machine 0x${machine.toString(16)}` };
  }
  if (b.length >= 8 && b.readUInt32LE(0) === 0xfeedfacf) {
    const type = b.readUInt32LE(4);
    const cpu = MACHO[type];
    return cpu ? { os: "darwin", cpu } : { error: `a Mach-O executable for cpu type 0x${type.toString(16)}` };
  }
  if (b.length >= 4 && (b.readUInt32BE(0) === 0xcafebabe || b.readUInt32BE(0) === 0xbebafeca)) {
    return { error: "a universal (fat) Mach-O binary: give each architecture its own" };
  }
  if (b.length >= 4 && b.readUInt32LE(0) === 0xfeedface) return { error: "a 32-bit Mach-O executable" };
  if (b.length >= 0x40 && b[0] === 0x4d && b[1] === 0x5a) {
    const at = b.readUInt32LE(0x3c);
    if (b.length < at + 6 || b.readUInt32BE(at) !== 0x50450000) return { error: "an MZ file without a PE header" };
    const machine = b.readUInt16LE(at + 4);
    const cpu = PE[machine];
    return cpu ? { os: "win32", cpu } : { error: `a PE executable for machine 0x${machine.toString(16)}` };
  }
  if (b.length >= 2 && b[0] === 0x23 && b[1] === 0x21) return { error: "a script (#!), not a compiled binary" };
  return { error: "not an ELF, Mach-O or PE executable" };
}

// null when `file` is an executable for `platform` (e.g. "darwin-arm64"),
// else why not.
function mismatch(file, platform) {
  const fd = fs.openSync(file, "r");
  const head = Buffer.alloc(4096);
  const n = fs.readSync(fd, head, 0, head.length, 0);
  fs.closeSync(fd);
  const found = identify(head.subarray(0, n));
  if (found.error) return `${file} is ${found.error}, not a ${platform} executable`;
  const is = `${found.os}-${found.cpu}`;
  return is === platform ? null : `${file} is a ${is} executable, not a ${platform} one`;
}

module.exports = { identify, mismatch };

if (require.main === module) {
  const [file, platform] = process.argv.slice(2);
  if (!file || !platform) {
    process.stderr.write("usage: node binary-format.js FILE PLATFORM\n");
    process.exit(2);
  }
  const why = mismatch(file, platform);
  if (why) {
    process.stderr.write(`${why}\n`);
    process.exit(1);
  }
}
