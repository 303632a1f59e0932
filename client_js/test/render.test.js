import assert from 'node:assert/strict';
import { test } from 'node:test';

import { safeUrl } from '../src/render.js';

// The renderer itself needs a DOM: browser.test.js covers it in Chromium.

test('call-to-action urls: http, https and relative paths only', () => {
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
    '',
    null,
    undefined,
    42,
  ]) {
    assert.equal(safeUrl(bad, base), null, String(bad));
  }
});
