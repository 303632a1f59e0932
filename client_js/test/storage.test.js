import assert from 'node:assert/strict';
import { test } from 'node:test';

import { isVisitorId, openStore, randomId } from '../src/storage.js';
import { FakeStorage } from '../test-support/fakes.js';

test('reads and writes strings through to the browser storage', () => {
  const win = { localStorage: new FakeStorage() };
  const store = openStore(win, 'localStorage');
  store.set('nudge:rx', 4);
  assert.equal(win.localStorage.getItem('nudge:rx'), '4');
  assert.equal(store.get('nudge:rx'), '4');
  store.remove('nudge:rx');
  assert.equal(store.get('nudge:rx'), null);
});

test('falls back to memory when storage is missing or throws', () => {
  for (const win of [{}, { sessionStorage: Object.assign(new FakeStorage(), { broken: true }) }]) {
    const store = openStore(win, 'sessionStorage');
    store.set('k', 'v');
    assert.equal(store.get('k'), 'v');
  }
});

test('keeps working in memory when storage starts failing (quota)', () => {
  const win = { sessionStorage: new FakeStorage() };
  const store = openStore(win, 'sessionStorage');
  store.set('a', '1');
  win.sessionStorage.broken = true;
  store.set('b', '2');
  assert.equal(store.get('a'), '1');
  assert.equal(store.get('b'), '2');
});

test('random ids have the prefix and 22 characters of [A-Za-z0-9_-]', () => {
  const ids = new Set();
  for (let i = 0; i < 200; i++) {
    const id = randomId('v_');
    assert.match(id, /^v_[A-Za-z0-9_-]{22}$/);
    assert.ok(isVisitorId(id));
    ids.add(id);
  }
  assert.equal(ids.size, 200);
  assert.equal(isVisitorId('short'), false);
  assert.equal(isVisitorId('v_has space_xxxx'), false);
  assert.equal(isVisitorId(null), false);
});
