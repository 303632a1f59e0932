// Rendering against a real DOM: headless Chromium opens test-support/browser/render.html (a fake
// server in the page, the built nudge.js), which reports its checks in <pre id="results">.
// Skipped when no Chromium is installed. Everything stays on 127.0.0.1; a dead proxy on loopback
// catches any request the browser would make elsewhere.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';

const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PAGES = new URL('../test-support/browser/', import.meta.url);
const BUILT = new URL('../../server/nudge/static/nudge.js', import.meta.url);

test('messages render, queue, trap focus and report in a real browser', { skip: !existsSync(CHROMIUM) && `no ${CHROMIUM}`, timeout: 120000 }, async () => {
  const server = createServer((req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    const file = path === '/nudge.js' ? BUILT : new URL('.' + path, PAGES);
    if (!/^\/[\w.-]+$/.test(path) || !existsSync(file)) return res.writeHead(404).end();
    res.writeHead(200, { 'content-type': path.endsWith('.html') ? 'text/html' : 'text/javascript' });
    res.end(readFileSync(file));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const profile = mkdtempSync(join(tmpdir(), 'nudge-chromium-'));
  try {
    const url = `http://127.0.0.1:${server.address().port}/index.html`;
    const html = await new Promise((resolve, reject) =>
      execFile(
        CHROMIUM,
        [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
          '--proxy-server=http://127.0.0.1:9',
          '--proxy-bypass-list=127.0.0.1',
          `--user-data-dir=${profile}`,
          '--virtual-time-budget=60000', // the toast's 8 s pass in virtual time
          '--dump-dom',
          url,
        ],
        { timeout: 90000, maxBuffer: 1 << 24 },
        (err, stdout) => (err ? reject(err) : resolve(stdout)),
      ),
    );
    const found = html.match(/<pre id="results">([\s\S]*?)<\/pre>/);
    assert.ok(found, 'the pages reported their results:\n' + html.slice(0, 2000));
    const results = JSON.parse(found[1].replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&amp;/g, '&'));
    const failed = results.filter(([, ok]) => !ok);
    assert.deepEqual(failed, [], JSON.stringify(failed, null, 1));
    assert.ok(results.length >= 30, `${results.length} checks ran`);
  } finally {
    server.close();
    rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  }
});
