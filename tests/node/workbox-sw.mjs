// Writes a Workbox service worker for the app in a folder, as
// vite-plugin-pwa's default (generateSW) does: every file precached, a
// navigation fallback to index.html, skipWaiting and clientsClaim.
// Usage: node workbox-sw.mjs <folder>
import workboxBuild from 'workbox-build';

const [dir] = process.argv.slice(2);
if (!dir) {
  console.error('usage: node workbox-sw.mjs <folder>');
  process.exit(2);
}
const { count, warnings } = await workboxBuild.generateSW({
  globDirectory: dir,
  globPatterns: ['**/*.{html,js,css}'],
  globIgnores: ['sw.js', 'workbox-*.js'],
  swDest: `${dir}/sw.js`,
  navigateFallback: 'index.html',
  skipWaiting: true,
  clientsClaim: true,
  mode: 'production',
  sourcemap: false,
});
if (warnings.length) console.error(warnings.join('\n'));
console.log(`precached ${count} files`);
