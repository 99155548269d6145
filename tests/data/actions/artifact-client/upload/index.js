// Upload half of ipld-scheduler's artifact test client (v3 artifact protocol, as act serves it).
// Node built-ins only. Each file is sent in one PUT, gzip-encoded when that is smaller.
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');
const zlib = require('zlib');

function input(key) {
  return (process.env[`INPUT_${key.toUpperCase()}`] || '').trim();
}

function request(method, url, headers, body) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode < 200 || res.statusCode > 299) {
          reject(new Error(`${method} ${url}: HTTP ${res.statusCode} ${text.slice(0, 200)}`));
        } else {
          resolve(text);
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

// [relative path with '/', absolute path] for a file, or every file under a directory, sorted.
function listFiles(root) {
  if (fs.statSync(root).isFile()) {
    return [[path.basename(root), root]];
  }
  const found = [];
  const walk = (dir, prefix) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (entry.isDirectory()) {
        walk(full, rel);
      } else if (entry.isFile()) {
        found.push([rel, full]);
      }
    }
  };
  walk(root, '');
  return found.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

async function main() {
  const name = input('name') || 'artifact';
  const where = path.resolve(process.env.GITHUB_WORKSPACE || process.cwd(), input('path'));
  const base = process.env.ACTIONS_RUNTIME_URL;
  const runId = process.env.GITHUB_RUN_ID;
  if (!base || !runId) {
    throw new Error('ACTIONS_RUNTIME_URL and GITHUB_RUN_ID must be set (act sets them)');
  }
  if (!fs.existsSync(where)) {
    throw new Error(`nothing to upload at ${where}`);
  }
  const files = listFiles(where);
  if (files.length === 0) {
    throw new Error(`no files under ${where}`);
  }
  const auth = { Authorization: `Bearer ${process.env.ACTIONS_RUNTIME_TOKEN || ''}` };
  const json = { ...auth, 'Content-Type': 'application/json', Accept: 'application/json' };
  const artifacts = new URL(`_apis/pipelines/workflows/${runId}/artifacts`, base);

  // 1. Create the file container: the server answers with the URL files go to.
  const created = JSON.parse(
    await request('POST', artifacts, json, JSON.stringify({ Type: 'actions_storage', Name: name })),
  );
  const container = created.fileContainerResourceUrl;
  if (typeof container !== 'string') {
    throw new Error(`no fileContainerResourceUrl in ${JSON.stringify(created)}`);
  }

  // 2. One PUT per file, the item path being "<name>/<relative path>".
  let total = 0;
  for (const [rel, full] of files) {
    const data = fs.readFileSync(full);
    const packed = zlib.gzipSync(data);
    const gzip = packed.length < data.length;
    const body = gzip ? packed : data;
    const headers = { ...auth, 'Content-Type': 'application/octet-stream' };
    if (gzip) {
      headers['Content-Encoding'] = 'gzip';
      headers['x-tfs-filelength'] = String(data.length);
    }
    if (body.length > 0) {
      headers['Content-Range'] = `bytes 0-${body.length - 1}/${body.length}`;
    }
    const url = new URL(container);
    url.searchParams.set('itemPath', `${name}/${rel}`);
    await request('PUT', url, headers, body);
    total += data.length;
    console.log(`${name}/${rel}: ${data.length} bytes${gzip ? ` (sent gzip, ${body.length})` : ''}`);
  }

  // 3. Finalize with the artifact's size.
  const finalize = new URL(artifacts);
  finalize.searchParams.set('artifactName', name);
  await request('PATCH', finalize, json, JSON.stringify({ Size: total }));
  console.log(`uploaded ${files.length} files, ${total} bytes, as artifact ${name}`);
}

main().catch((err) => {
  console.log(`::error::${err.message}`);
  process.exitCode = 1;
});
