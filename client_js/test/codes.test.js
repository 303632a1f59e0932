import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { CODECS, json, pick } from '../src/codec.js';
import { Close, ErrorCode, FATAL, MAX_BATCH } from '../src/codes.js';

// codes.js mirrors docs/protocol.md; these tests fail when the two drift apart.
const protocol = readFileSync(new URL('../../docs/protocol.md', import.meta.url), 'utf8');
const section = (title) => protocol.split(/^## /m).find((s) => s.startsWith(title));

test('every close code of the protocol is mirrored, and only those', () => {
  const documented = [...section('Close codes').matchAll(/^\| `(\d{4})`/gm)].map((m) => Number(m[1]));
  const mirrored = Object.values(Close).filter((c) => c !== Close.ABNORMAL); // 1006 is the browser's
  assert.deepEqual(mirrored.sort(), documented.sort());
});

test('the codes the protocol says not to reconnect after are the fatal ones', () => {
  const rows = section('Close codes').split('\n').filter((l) => /^\| `\d{4}`/.test(l));
  const stop = rows.filter((l) => /\|\s*not reconnect[^|]*\|\s*$/.test(l)).map((l) => Number(l.slice(3, 7)));
  assert.deepEqual([...FATAL].sort(), stop.sort());
});

test('an evs frame holds at most as many events as the protocol allows', () => {
  const evs = section('Client → server').split('### `evs`')[1];
  assert.equal(MAX_BATCH, Number(/up to (\d+) events/.exec(evs)[1]));
});

test('every error code of the protocol is mirrored', () => {
  const table = section('Server → client').split('### `error`')[1];
  const documented = [...table.matchAll(/^\| `([a-z_]+)`/gm)].map((m) => m[1]);
  assert.deepEqual(Object.values(ErrorCode).sort(), documented.sort());
});

test('the JSON codec speaks nudge.v1.json and is picked when the server names none', () => {
  assert.ok(protocol.includes('`nudge.v1.json`'));
  assert.equal(json.subprotocol, 'nudge.v1.json');
  assert.equal(pick(CODECS, ''), json);
  assert.equal(pick(CODECS, 'nudge.v1.json'), json);
  assert.deepEqual(json.decode(json.encode({ t: 'ack', seq: 3 })), { t: 'ack', seq: 3 });
  assert.equal(json.decode(new ArrayBuffer(2)), null);
});
