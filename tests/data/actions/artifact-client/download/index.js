// Download half of ipld-scheduler's artifact test client (v3 artifact protocol, as act serves it).
// Node built-ins only. Item paths come from the server: one that would leave `path` is refused.
'use strict';
const fs = require('fs');
const http = require('http');
const path = require('path');
const zlib = require('zlib');

function input(key) {
  return (process.env[`INPUT_${key.toUpperCase()}`] || '').trim();
}

function get(url, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'GET', headers }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        if (res.statusCode < 200 || res.statusCode > 299) {
          const text = body.toString('utf8').slice(0, 200);
          reject(new Error(`GET ${url}: HTTP ${res.statusCode} ${text}`));
        } else {
          resolve({ body, gzip: res.headers['content-encoding'] === 'gzip' });
        }
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

async function getJson(url, headers) {
  return JSON.parse((await get(url, headers)).body.toString('utf8'));
}

async function main() {
  const name = input('name');
  const dest = path.resolve(process.env.GITHUB_WORKSPACE || process.cwd(), input('path') || '.');
  const base = process.env.ACTIONS_RUNTIME_URL;
  const runId = process.env.GITHUB_RUN_ID;
  if (!name) {
    throw new Error('the name input is required');
  }
  if (!base || !runId) {
    throw new Error('ACTIONS_RUNTIME_URL and GITHUB_RUN_ID must be set (act sets them)');
  }
  const headers = {
    Authorization: `Bearer ${process.env.ACTIONS_RUNTIME_TOKEN || ''}`,
    Accept: 'application/json',
  };

  // 1. The run's artifacts: one entry per name, with the container URL to list it from.
  const listed = await getJson(new URL(`_apis/pipelines/workflows/${runId}/artifacts`, base), headers);
  const entries = Array.isArray(listed.value) ? listed.value : [];
  const entry = entries.find((e) => e && e.name === name);
  if (!entry || typeof entry.fileContainerResourceUrl !== 'string') {
    throw new Error(`no artifact ${name} (the run has: ${entries.map((e) => e.name).join(', ')})`);
  }

  // 2. The artifact's items ("<name>/<relative path>", a URL each).
  const container = new URL(entry.fileContainerResourceUrl);
  container.searchParams.set('itemPath', name);
  const items = (await getJson(container, headers)).value || [];
  const files = items.filter((item) => item.itemType === 'file');
  if (files.length === 0) {
    throw new Error(`artifact ${name} has no files`);
  }

  // 3. Each file, gunzipped when the server says it is stored gzip-encoded.
  let total = 0;
  for (const item of files) {
    const prefix = `${name}/`;
    if (typeof item.path !== 'string' || !item.path.startsWith(prefix)) {
      throw new Error(`item ${JSON.stringify(item.path)} is not under ${prefix}`);
    }
    const rel = item.path.slice(prefix.length);
    const target = path.resolve(dest, rel);
    if (rel === '' || path.isAbsolute(rel) || !target.startsWith(dest + path.sep)) {
      throw new Error(`item ${JSON.stringify(item.path)} would leave ${dest}`);
    }
    const { body, gzip } = await get(new URL(item.contentLocation), headers);
    const data = gzip ? zlib.gunzipSync(body) : body;
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, data);
    total += data.length;
    console.log(`${item.path}: ${data.length} bytes${gzip ? ' (was gzip)' : ''}`);
  }
  console.log(`downloaded artifact ${name}: ${files.length} files, ${total} bytes, into ${dest}`);
}

main().catch((err) => {
  console.log(`::error::${err.message}`);
  process.exitCode = 1;
});
