import assert from 'node:assert/strict';
import { test } from 'node:test';

import { safeUrl, themeVars } from '../src/render.js';

// The renderer itself needs a DOM: browser.test.js covers it in Chromium.

test('call-to-action urls: http, https and relative paths that stay on the site only', () => {
  const base = 'https://shop.example/article';
  assert.equal(safeUrl('/checkout', base), 'https://shop.example/checkout');
  assert.equal(safeUrl('checkout?step=2', base), 'https://shop.example/checkout?step=2');
  assert.equal(safeUrl('#reviews', base), 'https://shop.example/article#reviews');
  assert.equal(safeUrl('https://other.example/x', base), 'https://other.example/x');
  assert.equal(safeUrl('http://other.example/', base), 'http://other.example/');
  for (const bad of [
    'javascript:alert(1)',
    ' JavaScript:alert(1)',
    'java\tscript:alert(1)',
    'data:text/html,<script>alert(1)</script>',
    'vbscript:x',
    'file:///etc/passwd',
    'mailto:a@b.c',
    // Read as another host by a URL parser: protocol-relative, a backslash, a tab or newline.
    '//evil.example/x',
    '/\\evil.example/x',
    '\\\\evil.example/x',
    '/\t/evil.example/x',
    '/\n/evil.example/x',
    ' //evil.example/x',
    'https://shop.example\t@evil.example/',
    '',
    null,
    undefined,
    42,
  ]) {
    assert.equal(safeUrl(bad, base), null, String(bad));
  }
});

test('a campaign theme sets only --nudge-* variables, with values that load nothing', () => {
  assert.deepEqual(
    themeVars({
      '--nudge-accent': '#0a7',
      '--nudge-radius': 4,
      color: 'red',
      '--other': 'x',
      '--nudge-bg': 'url(https://evil.example/x.png)',
      '--nudge-fg': 'red; background: blue',
      '--nudge-font': 'image-set("x.png" 1x)',
      '--NUDGE-X': 'y',
      '--nudge-x': 'z'.repeat(201),
    }),
    [
      ['--nudge-accent', '#0a7'],
      ['--nudge-radius', '4'],
    ],
  );
  assert.deepEqual(themeVars(null), []);
  assert.deepEqual(themeVars('--nudge-accent: red'), []);
});
