// Writes an import map with the real @jspm/generator, for a CDN that
// serves packages in jspm.io's layout (`<cdn>/npm:<name>@<version>/<file>`),
// so the tests need no network. Usage:
//   node jspm-map.mjs <page-url> <cdn-url> <package>...   → the map on stdout
import { Generator } from '@jspm/generator';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const [page, cdnArg, ...install] = process.argv.slice(2);
if (!page || !cdnArg || !install.length) {
  console.error('usage: node jspm-map.mjs <page-url> <cdn-url> <package>...');
  process.exit(2);
}
const cdn = cdnArg.endsWith('/') ? cdnArg : `${cdnArg}/`;
const modules = path.join(path.dirname(fileURLToPath(import.meta.url)), 'node_modules');
const version = (name) => JSON.parse(fs.readFileSync(path.join(modules, name, 'package.json'))).version;
const exact = /^npm:((?:@[^/\\%@]+\/)?[^./\\%@][^/\\%@]*)@([^/]+)(\/.*)?$/;

const localcdn = {
  pkgToUrl: ({ registry, name, version: v }) => `${cdn}${registry}:${name}@${v}/`,
  parseUrlPkg(url) {
    if (!url.startsWith(cdn)) return undefined;
    const [, name, v] = url.slice(cdn.length).match(exact) || [];
    return name ? { registry: 'npm', name, version: v } : undefined;
  },
  resolveLatestTarget: ({ registry, name }) => ({ registry, name, version: version(name) }),
};

const generator = new Generator({
  mapUrl: page,
  env: ['browser', 'production', 'module'],
  defaultProvider: 'localcdn',
  customProviders: { localcdn },
  integrity: true,
});
await generator.install(install);
process.stdout.write(JSON.stringify(generator.getMap(), null, 2));
