import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';

// `npm test` builds first (pretest); this checks the file the server serves.
const BUILT = new URL('../../server/nudge/static/nudge.js', import.meta.url);
const LIMIT = 10 * 1024;

test(`nudge.js is under ${LIMIT} bytes gzipped`, (t) => {
  const code = readFileSync(BUILT);
  const size = gzipSync(code).length;
  t.diagnostic(`nudge.js: ${code.length} bytes minified, ${size} bytes gzipped`);
  assert.ok(size < LIMIT, `${size} bytes gzipped`);
});

test('nudge.js is one self-contained script', () => {
  const code = readFileSync(BUILT, 'utf8');
  assert.match(code, /^\(\(\)=>\{/, 'an IIFE');
  assert.doesNotMatch(code, /\bimport\b|\brequire\(|\bexport\b/);
  assert.doesNotMatch(code, /innerHTML|insertAdjacentHTML|document\.write|\beval\(/, 'no HTML from strings');
});

test('the ES module build exports the API and is inert without a window (server-side rendering)', async () => {
  const mod = await import(new URL('../dist/nudge.mjs', import.meta.url));
  assert.equal(typeof mod.install, 'function');
  const nudge = mod.default;
  assert.equal(nudge.state, 'closed');
  for (const m of ['init', 'track', 'identify', 'page', 'shutdown', 'optOut']) assert.equal(nudge[m](), undefined, m);
  assert.equal(typeof nudge.onMessage(() => {}), 'function');
});

test("the dashboard's preview is built from the snippet's own renderer, not a copy", () => {
  const preview = readFileSync(new URL('../../server/nudge/static/dashboard/preview.js', import.meta.url), 'utf8');
  const snippet = readFileSync(BUILT, 'utf8');
  const css = (code) => {
    const at = code.indexOf(':host{all:initial');
    assert.ok(at >= 0, 'the renderer stylesheet');
    return code.slice(at, code.indexOf('`', at));
  };
  assert.equal(css(preview), css(snippet));
  assert.match(preview, /nudgePreview/);
  assert.doesNotMatch(preview, /WebSocket/, 'no socket in the preview');
});
