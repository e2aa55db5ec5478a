// Stand-ins for the Rust toolchain on a release pipeline's runners, which
// this machine cannot be: it has no standard library for macOS, Windows or
// linux-arm64 targets. `cargo build --release --locked -p stamp-cli
// --target T` writes target/T/release/stamp (stamp.exe on Windows): for
// x86_64-unknown-linux-gnu a copy of the real binary ($STAMP_LINUX_X64), for
// other targets a stand-in with that platform's executable header (ELF,
// Mach-O, PE, with the machine field), so the pack step's format check
// sees what a real build would give. `rustup target add T`, `rustup show`
// and `choco install rustup.install …` (Windows) are accepted. Anything else
// is refused. Each call is logged as a JSON line to $TOOLCHAIN_SHIM_LOG.
//
//   node toolchain-shim.mjs install DIR    writes DIR/cargo, DIR/rustup, DIR/choco
import { writeFileSync, mkdirSync, copyFileSync, chmodSync, appendFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const [tool, ...args] = process.argv.slice(2);
const fail = (msg) => {
  process.stderr.write(`${tool} (toolchain-shim): ${msg}\n`);
  process.exit(1);
};

if (tool === 'install') {
  const dir = resolve(args[0]);
  mkdirSync(dir, { recursive: true });
  const self = fileURLToPath(import.meta.url);
  for (const t of ['cargo', 'rustup', 'choco']) {
    writeFileSync(join(dir, t), `#!/usr/bin/env bash\nexec node ${JSON.stringify(self)} ${t} "$@"\n`);
    chmodSync(join(dir, t), 0o755);
  }
  process.exit(0);
}

if (process.env.TOOLCHAIN_SHIM_LOG) {
  appendFileSync(process.env.TOOLCHAIN_SHIM_LOG, `${JSON.stringify({ tool, args, cwd: process.cwd() })}\n`);
}

// A header that says which platform the file is for, padded to 4 KiB.
function standIn(target) {
  const b = Buffer.alloc(4096);
  const elf = (machine) => {
    b.writeUInt32BE(0x7f454c46, 0);
    b[4] = 2; // 64-bit
    b[5] = 1; // little-endian
    b[6] = 1;
    b.writeUInt16LE(2, 16); // ET_EXEC
    b.writeUInt16LE(machine, 18);
  };
  const macho = (cpu) => {
    b.writeUInt32LE(0xfeedfacf, 0);
    b.writeUInt32LE(cpu, 4);
    b.writeUInt32LE(2, 12); // MH_EXECUTE
  };
  const pe = (machine) => {
    b.write('MZ', 0, 'latin1');
    b.writeUInt32LE(0x80, 0x3c);
    b.writeUInt32BE(0x50450000, 0x80);
    b.writeUInt16LE(machine, 0x84);
  };
  switch (target) {
    case 'aarch64-unknown-linux-gnu': elf(0xb7); break;
    case 'aarch64-apple-darwin': macho(0x0100000c); break;
    case 'x86_64-apple-darwin': macho(0x01000007); break;
    case 'x86_64-pc-windows-msvc': pe(0x8664); break;
    default: fail(`no stand-in for target ${target}`);
  }
  return b;
}

switch (tool) {
  case 'cargo': {
    if (args[0] === '--version') { console.log('cargo 1.0.0 (toolchain-shim)'); break; }
    const want = ['build', '--release', '--locked', '-p', 'stamp-cli', '--target'];
    if (args.length !== 7 || want.some((w, i) => args[i] !== w)) fail(`only \`${want.join(' ')} T\` is known, not: cargo ${args.join(' ')}`);
    const target = args[6];
    const out = join(process.env.CARGO_TARGET_DIR || 'target', target, 'release');
    mkdirSync(out, { recursive: true });
    const exe = join(out, target.includes('windows') ? 'stamp.exe' : 'stamp');
    if (target === 'x86_64-unknown-linux-gnu') {
      if (!process.env.STAMP_LINUX_X64) fail('STAMP_LINUX_X64 names no binary');
      copyFileSync(process.env.STAMP_LINUX_X64, exe);
    } else {
      writeFileSync(exe, standIn(target));
    }
    chmodSync(exe, 0o755);
    process.stderr.write(`    Finished release [optimized] target(s) for ${target} (toolchain-shim)\n`);
    break;
  }
  case 'rustup':
    if (args[0] === 'target' && args[1] === 'add' && args.length > 2) {
      for (const t of args.slice(2)) process.stderr.write(`info: component 'rust-std' for target '${t}' is up to date\n`);
    } else if (args[0] === 'show' || args[0] === '--version') {
      console.log('rustup (toolchain-shim)');
    } else {
      fail(`unknown: rustup ${args.join(' ')}`);
    }
    break;
  case 'choco':
    if (args[0] !== 'install' || args[1] !== 'rustup.install') fail(`unknown: choco ${args.join(' ')}`);
    console.log('rustup.install is installed (toolchain-shim)');
    break;
  default:
    fail('unknown tool');
}
