import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { CODECS, byteLength, json, msgpack, pick, unpack } from '../src/codec.js';

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const bytes = (h) => new Uint8Array(Buffer.from(h.replace(/\s+/g, ''), 'hex'));

describe('codec choice', () => {
  test('JSON is the default; the server names the codec by subprotocol', () => {
    assert.deepEqual(CODECS, [json]);
    assert.equal(pick([msgpack, json], 'nudge.v1.msgpack'), msgpack);
    assert.equal(pick([msgpack, json], 'nudge.v1.json'), json);
    assert.equal(pick([msgpack, json], ''), json, 'no subprotocol chosen: JSON');
    assert.equal(msgpack.binary, true);
    assert.equal(json.binary, false);
  });

  test('each codec ignores frames of the other kind', () => {
    assert.equal(json.decode(new ArrayBuffer(1)), null);
    assert.equal(msgpack.decode('{"t":"ack"}'), null);
  });

  test('byteLength counts UTF-8 bytes of text and the length of binary frames', () => {
    assert.equal(byteLength('é€'), 5);
    assert.equal(byteLength(new Uint8Array(7)), 7);
  });
});

describe('MessagePack', () => {
  test('encodes each type in its shortest form, as msgpack-python does', () => {
    // Expected bytes from msgpack.packb(..., use_bin_type=True).
    const cases = [
      [null, 'c0'],
      [false, 'c2'],
      [true, 'c3'],
      [0, '00'],
      [127, '7f'],
      [128, 'cc80'],
      [256, 'cd0100'],
      [65536, 'ce00010000'],
      [2 ** 32, 'cf0000000100000000'],
      [-1, 'ff'],
      [-32, 'e0'],
      [-33, 'd2ffffffdf'],
      [1.5, 'cb3ff8000000000000'],
      ['', 'a0'],
      ['é', 'a2c3a9'],
      ['x'.repeat(32), 'd920' + '78'.repeat(32)],
      ['x'.repeat(256), 'da0100' + '78'.repeat(256)],
      [[1, 'a'], '9201a161'],
      [{ t: 'ack', seq: 5 }, '82a174a361636ba373657105'],
    ];
    for (const [value, expected] of cases) assert.equal(hex(msgpack.encode(value)), expected, JSON.stringify(value));
  });

  test('large arrays and maps use the 16-bit headers', () => {
    const list = Array.from({ length: 16 }, (_, i) => i);
    assert.equal(hex(msgpack.encode(list)).slice(0, 6), 'dc0010');
    const map = Object.fromEntries(list.map((i) => ['k' + i, i]));
    assert.equal(hex(msgpack.encode(map)).slice(0, 6), 'de0010');
  });

  test('a record survives the round trip', () => {
    const record = {
      t: 'ev',
      seq: 70000,
      name: 'add_to_cart',
      props: { id: 'sku-1', name: 'Mug ☕', price: 12.5, quantity: 1, tags: ['a', 'b'], gift: false, note: null, n: -200, long: 'y'.repeat(70000) },
    };
    assert.deepEqual(msgpack.decode(msgpack.encode(record).buffer), record);
  });

  test('decodes every form the server may send (float 32, int 8/16/64, str 8/32, array/map 32)', () => {
    assert.equal(unpack(bytes('ca3fc00000')), 1.5);
    assert.equal(unpack(bytes('d080')), -128);
    assert.equal(unpack(bytes('d1fc18')), -1000);
    assert.equal(unpack(bytes('d3fffffffeffffffff')), -(2 ** 32) - 1);
    assert.equal(unpack(bytes('cf0000000100000000')), 2 ** 32);
    assert.equal(unpack(bytes('d90161')), 'a');
    assert.equal(unpack(bytes('db0000000161')), 'a');
    assert.deepEqual(unpack(bytes('dd0000000101')), [1]);
    assert.deepEqual(unpack(bytes('df00000001a16101')), { a: 1 });
    // a show frame as the server encodes it
    assert.deepEqual(unpack(bytes('83a174a473686f77a3736571 01a474657874 a668c3a96c6c6f'.replace(/ /g, ''))), {
      t: 'show',
      seq: 1,
      text: 'héllo',
    });
  });

  test('refuses what the protocol does not use, and malformed input', () => {
    for (const bad of ['c4016161' /* bin */, 'd40100' /* fixext */, 'c1' /* never used */, '92', 'a361', '0101', '8101a0' /* int key */]) {
      assert.throws(() => unpack(bytes(bad)), Error, bad);
    }
  });
});
