import assert from 'node:assert/strict';
import { test } from 'node:test';

import { backoff } from '../src/backoff.js';

test('full jitter: each delay lies in [0, min(max, min * 2^step))', () => {
  for (let step = 0; step < 40; step++) {
    const cap = Math.min(30000, 500 * 2 ** step);
    for (let i = 0; i < 50; i++) {
      const d = backoff(step, 500, 30000);
      assert.ok(d >= 0 && d < cap, `step ${step}: ${d} not in [0, ${cap})`);
      assert.equal(d, Math.floor(d));
    }
  }
});

test('the random draw spans the whole window', () => {
  assert.equal(backoff(0, 500, 30000, () => 0), 0);
  assert.equal(backoff(0, 500, 30000, () => 0.5), 250);
  assert.equal(backoff(3, 500, 30000, () => 0.5), 2000);
  assert.equal(backoff(10, 500, 30000, () => 0.5), 15000, 'capped at max');
});

test('huge steps do not overflow', () => {
  assert.equal(backoff(5000, 500, 30000, () => 0.5), 15000);
});
