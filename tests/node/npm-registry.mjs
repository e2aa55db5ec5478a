// A local npm registry, enough for `npm publish` and `npm install`: the
// publish protocol (PUT /<name> with the packument and `_attachments`), the
// packument (GET /<name>, scoped names as @scope%2fname), tarballs, and a
// bearer token that publishing needs. A version is published once (403 on
// a second time, as registry.npmjs.org answers). It binds 127.0.0.1 on a
// free port, prints {"url": …} on stdout, logs each publish on stderr and
// to --log FILE as a JSON line, and exits when its stdin closes (the test
// that started it is gone) or after 10 minutes.
//
//   node npm-registry.mjs --token TOKEN [--log FILE]
import { createServer } from 'node:http';
import { appendFileSync } from 'node:fs';
import { createHash } from 'node:crypto';

const args = process.argv.slice(2);
const opt = (n) => (args.indexOf(`--${n}`) >= 0 ? args[args.indexOf(`--${n}`) + 1] : undefined);
const token = opt('token');
if (!token) throw new Error('--token is required');
const logFile = opt('log');

const packages = new Map(); // name -> packument
const tarballs = new Map(); // "/name/-/file.tgz" -> Buffer

const send = (res, status, body) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
};

const server = createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    const url = new URL(req.url, 'http://x');
    const path = decodeURIComponent(url.pathname);
    if (req.method === 'GET' && tarballs.has(path)) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.end(tarballs.get(path));
      return;
    }
    const name = path.slice(1);
    if (req.method === 'GET') {
      const doc = packages.get(name);
      return doc ? send(res, 200, doc) : send(res, 404, { error: 'Not found' });
    }
    if (req.method === 'PUT' && !name.includes('/-/') && name) {
      if (req.headers.authorization !== `Bearer ${token}`) {
        return send(res, 401, { error: 'unauthorized: a valid token is needed to publish' });
      }
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch {
        return send(res, 400, { error: 'the body is not JSON' });
      }
      if (body.name !== name) return send(res, 400, { error: `the body names ${body.name}, the path ${name}` });
      const doc = packages.get(name) || { _id: name, name, 'dist-tags': {}, versions: {}, time: {} };
      const host = `http://${req.headers.host}`;
      for (const [version, manifest] of Object.entries(body.versions || {})) {
        if (doc.versions[version]) return send(res, 403, { error: `cannot publish over the previously published version ${version}` });
        const file = `${name.split('/').pop()}-${version}.tgz`;
        const attachment = Object.values(body._attachments || {})[0];
        if (!attachment) return send(res, 400, { error: 'no _attachments' });
        const data = Buffer.from(attachment.data, 'base64');
        if (data.length !== attachment.length) return send(res, 400, { error: 'the attachment length is wrong' });
        const shasum = createHash('sha1').update(data).digest('hex');
        if (manifest.dist?.shasum && manifest.dist.shasum !== shasum) return send(res, 400, { error: 'shasum mismatch' });
        tarballs.set(`/${name}/-/${file}`, data);
        doc.versions[version] = { ...manifest, dist: { ...manifest.dist, shasum, tarball: `${host}/${name}/-/${file}` } };
        doc.time[version] = new Date().toISOString();
        const entry = { name, version, tag: Object.keys(body['dist-tags'] || {})[0], os: manifest.os, cpu: manifest.cpu };
        process.stderr.write(`npm-registry: published ${name}@${version}\n`);
        if (logFile) appendFileSync(logFile, `${JSON.stringify(entry)}\n`);
      }
      Object.assign(doc['dist-tags'], body['dist-tags']);
      packages.set(name, doc);
      return send(res, 201, { ok: true });
    }
    send(res, 405, { error: `${req.method} ${path} is not implemented by this registry` });
  });
});

server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ url: `http://127.0.0.1:${server.address().port}/` }));
});
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('close', () => process.exit(0));
setTimeout(() => process.exit(0), 600_000).unref();
