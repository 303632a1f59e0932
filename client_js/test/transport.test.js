import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { json, msgpack } from '../src/codec.js';
import { KEYS, openStore } from '../src/storage.js';
import { Transport } from '../src/transport.js';
import { FakeClock, FakeStorage, fakeWebSocket } from '../test-support/fakes.js';

/** A transport on fake storage, clock and sockets; `stores` lets a test reuse a tab's storage. */
function setup(options = {}, stores = null) {
  const clock = new FakeClock();
  const WS = fakeWebSocket();
  const win = stores || { localStorage: new FakeStorage(), sessionStorage: new FakeStorage() };
  const shown = [];
  const states = [];
  const warnings = [];
  const deferred = []; // what the transport left for the end of the task, run by settle()
  const transport = new Transport({
    url: 'wss://nudge.example/ws',
    key: 'pk_demo',
    local: openStore(win, 'localStorage'),
    session: openStore(win, 'sessionStorage'),
    WebSocket: WS,
    timers: clock,
    onShow: (m) => shown.push(m),
    onState: (s) => states.push(s),
    warn: (...a) => warnings.push(a.join(' ')),
    defer: (fn) => deferred.push(fn),
    ...options,
  });
  /** The current task's script is done: run what was deferred to its end (the microtasks). */
  const settle = () => {
    while (deferred.length) deferred.shift()();
  };
  return { transport, clock, WS, win, shown, states, warnings, settle, deferred };
}

/** Start, accept the socket and answer hello with welcome. */
function connect(t, welcome = {}) {
  t.transport.start();
  const ws = t.WS.last();
  ws.accept();
  ws.push({ t: 'welcome', session: 's_1', visitor: null, resumed: false, ack: 0, grace: 300, ...welcome });
  return ws;
}

describe('handshake', () => {
  test('offers the JSON subprotocol and sends hello with key and a new visitor id', () => {
    const t = setup();
    t.transport.start();
    const ws = t.WS.last();
    assert.equal(ws.url, 'wss://nudge.example/ws');
    assert.deepEqual(ws.protocols, ['nudge.v1.json']);
    assert.equal(t.transport.state, 'connecting');
    ws.accept();
    const [hello] = ws.frames();
    assert.equal(hello.t, 'hello');
    assert.equal(hello.v, 1);
    assert.equal(hello.key, 'pk_demo');
    assert.match(hello.visitor, /^v_[A-Za-z0-9_-]{22}$/);
    assert.equal(t.win.localStorage.getItem(KEYS.visitor), hello.visitor);
    assert.equal('session' in hello, false, 'no session to resume yet');
    assert.equal(t.transport.state, 'connecting', 'open only after welcome');
  });

  test('welcome opens; the session is stored and named with rx in the next hello', () => {
    const t = setup();
    const ws = connect(t, { session: 's_abc', visitor: 'v_fromserver1' });
    assert.equal(t.transport.state, 'open');
    assert.deepEqual(t.states, ['connecting', 'open']);
    assert.equal(t.win.sessionStorage.getItem(KEYS.session), 's_abc');
    assert.equal(t.win.localStorage.getItem(KEYS.visitor), 'v_fromserver1');
    ws.push({ t: 'show', seq: 3, kind: 'toast', title: 'Hi' });
    ws.drop(1006);
    t.clock.tick(1000);
    const again = t.WS.last();
    assert.notEqual(again, ws);
    again.accept();
    assert.deepEqual(again.frames()[0], {
      t: 'hello',
      v: 1,
      key: 'pk_demo',
      visitor: 'v_fromserver1',
      session: 's_abc',
      rx: 3,
    });
  });

  test('a message id processed once is acknowledged and skipped under a new seq, in any tab', () => {
    const first = setup();
    const ws = connect(first, { session: 's_1' });
    ws.push({ t: 'show', seq: 1, id: 'absence:cart@1700000000000', kind: 'toast', title: 'Cart' });
    ws.push({ t: 'show', seq: 2, id: 'absence:cart@1700000000000', kind: 'toast', title: 'Cart' });
    assert.deepEqual(first.shown.map((m) => m.seq), [1]);
    assert.deepEqual(ws.frames().filter((f) => f.t === 'ack').map((f) => f.seq), [1, 2]);
    // Another tab of the same browser (its own session storage, the same local storage):
    const other = setup({}, { localStorage: first.win.localStorage, sessionStorage: new FakeStorage() });
    const ws2 = connect(other, { session: 's_2' });
    ws2.push({ t: 'show', seq: 1, id: 'absence:cart@1700000000000', kind: 'toast', title: 'Cart' });
    ws2.push({ t: 'show', seq: 2, id: 'm_other', kind: 'toast', title: 'Other' });
    assert.deepEqual(other.shown.map((m) => m.id), ['m_other']);
    assert.deepEqual(ws2.frames().filter((f) => f.t === 'ack').map((f) => f.seq), [1, 2]);
  });

  test('the ids remembered are bounded', () => {
    const t = setup();
    const ws = connect(t);
    for (let i = 1; i <= 80; i++) ws.push({ t: 'show', seq: i, id: `m_${i}`, kind: 'toast' });
    assert.equal(t.shown.length, 80);
    assert.equal(JSON.parse(t.win.localStorage.getItem(KEYS.seen)).length, 50);
  });

  test('a new tab page resumes the session from storage (page navigation)', () => {
    const first = setup();
    const ws = connect(first, { session: 's_keep' });
    ws.push({ t: 'show', seq: 2, kind: 'toast' });
    first.transport.send('add_to_cart', { id: 'mug', name: 'Mug' });
    first.transport.shutdown();
    const next = setup({}, first.win);
    next.transport.start();
    next.WS.last().accept();
    const hello = next.WS.last().frames()[0];
    assert.equal(hello.session, 's_keep');
    assert.equal(hello.rx, 2);
    assert.equal(hello.visitor, first.win.localStorage.getItem(KEYS.visitor));
    next.WS.last().push({ t: 'welcome', session: 's_keep', resumed: true, ack: 0 });
    assert.deepEqual(next.WS.last().events().map((e) => [e.seq, e.name]), [[1, 'add_to_cart']]);
    assert.equal(next.transport.send('purchase', {}), 2, 'seq continues across pages');
  });

  test('no welcome within 10 s counts as a dead connection', () => {
    const t = setup({ random: () => 0.5 });
    t.transport.start();
    const ws = t.WS.last();
    ws.accept();
    t.clock.tick(9999);
    assert.equal(t.transport.state, 'connecting');
    t.clock.tick(1);
    assert.equal(ws.closedWith.code, 1000);
    assert.equal(t.transport.state, 'closed');
    t.clock.tick(250);
    assert.equal(t.WS.sockets.length, 2, 'reconnected');
  });
});

describe('events', () => {
  test('get increasing seq and stay in the outbox until acknowledged', () => {
    const t = setup();
    t.transport.start();
    assert.equal(t.transport.send('page_view', { path: '/' }), 1);
    assert.equal(t.transport.send('scroll', { depth: 10 }), 2);
    assert.equal(t.WS.last().sent.length, 0, 'nothing before the socket is open');
    const ws = t.WS.last();
    ws.accept();
    assert.deepEqual(ws.events(), [], 'nothing before welcome');
    ws.push({ t: 'welcome', session: 's_1', resumed: false, ack: 0 });
    assert.deepEqual(ws.events(), [
      { t: 'ev', seq: 1, name: 'page_view', props: { path: '/' } },
      { t: 'ev', seq: 2, name: 'scroll', props: { depth: 10 } },
    ]);
    assert.equal(t.transport.send('active'), 3);
    assert.equal(ws.events().length, 2, 'written once the task is done');
    t.settle();
    assert.deepEqual(ws.frames().at(-1), { t: 'ev', seq: 3, name: 'active', props: {} }, 'one event: an ev frame');
    const outbox = () => JSON.parse(t.win.sessionStorage.getItem(KEYS.outbox)).map((e) => e.seq);
    assert.deepEqual(outbox(), [1, 2, 3]);
    ws.push({ t: 'ack', seq: 2 });
    assert.deepEqual(outbox(), [3]);
    ws.push({ t: 'ack', seq: 3 });
    assert.deepEqual(outbox(), []);
    assert.equal(t.win.sessionStorage.getItem(KEYS.seq), '3');
  });

  test('props are copied when tracked', () => {
    const t = setup();
    const ws = connect(t);
    const props = { id: 'mug', quantity: 1 };
    t.transport.send('add_to_cart', props);
    props.quantity = 5;
    ws.drop(1006);
    t.clock.tick(1000);
    t.WS.last().accept();
    t.WS.last().push({ t: 'welcome', session: 's_1', resumed: true, ack: 0 });
    assert.equal(t.WS.last().events()[0].props.quantity, 1);
  });

  test('after a reconnect, welcome.ack decides which events are resent', () => {
    const t = setup();
    const ws = connect(t);
    for (const depth of [10, 20, 30, 40]) t.transport.send('scroll', { depth });
    ws.push({ t: 'ack', seq: 1 });
    ws.drop(1006);
    t.transport.send('scroll', { depth: 50 }); // while disconnected
    t.clock.tick(1000);
    const again = t.WS.last();
    again.accept();
    again.push({ t: 'welcome', session: 's_1', resumed: true, ack: 3 });
    assert.deepEqual(again.events().map((e) => e.seq), [4, 5]);
    assert.equal(t.transport.send('idle', { after: 10 }), 6);
  });

  test('a session that was not resumed starts numbering again from 1', () => {
    const t = setup();
    const ws = connect(t);
    ws.push({ t: 'show', seq: 4, kind: 'toast' });
    t.transport.send('a');
    t.transport.send('b');
    ws.push({ t: 'ack', seq: 1 });
    ws.drop(1001);
    t.clock.tick(1000);
    const again = t.WS.last();
    again.accept();
    again.push({ t: 'welcome', session: 's_2', resumed: false, ack: 0 });
    assert.deepEqual(again.events().map((e) => [e.seq, e.name]), [[1, 'b']]);
    assert.equal(t.win.sessionStorage.getItem(KEYS.rx), '0');
    again.push({ t: 'show', seq: 1, kind: 'toast' });
    assert.equal(t.shown.length, 2, 'seq 1 of the new session is new');
  });

  test('the outbox keeps only the newest 500 events', () => {
    const t = setup();
    for (let i = 0; i < 510; i++) t.transport.send('scroll', { depth: 10 });
    const outbox = JSON.parse(t.win.sessionStorage.getItem(KEYS.outbox));
    assert.equal(outbox.length, 500);
    assert.equal(outbox[0].seq, 11);
  });

  test('an event larger than a frame may be is refused', () => {
    const t = setup();
    assert.equal(t.transport.send('big', { text: 'x'.repeat(70000) }), 0);
    assert.equal(t.transport.send('small'), 1);
    assert.match(t.warnings[0], /larger than/);
  });

  test('an error naming a seq drops that event; each code is logged once', () => {
    const t = setup();
    const ws = connect(t);
    t.transport.send('signup');
    t.transport.send('scroll', { depth: 10 });
    ws.push({ t: 'error', code: 'unknown_event', reason: "unknown event 'signup'", seq: 1 });
    ws.push({ t: 'error', code: 'unknown_event', reason: "unknown event 'signup'", seq: 1 });
    const outbox = JSON.parse(t.win.sessionStorage.getItem(KEYS.outbox));
    assert.deepEqual(outbox.map((e) => e.seq), [2]);
    assert.equal(t.warnings.length, 1);
    assert.equal(t.transport.state, 'open');
  });

  test('close 1009 after a frame of one event drops that event, then reconnects', () => {
    const t = setup();
    const ws = connect(t);
    t.transport.send('a');
    t.settle();
    t.transport.send('b');
    t.settle();
    ws.drop(1009);
    t.clock.tick(1000);
    t.WS.last().accept();
    t.WS.last().push({ t: 'welcome', session: 's_1', resumed: true, ack: 0 });
    assert.deepEqual(t.WS.last().events().map((e) => e.name), ['a']);
  });

  test('close 1009 after a batch drops nothing; events then go one per frame until one is named', () => {
    const t = setup({ random: () => 0 });
    const ws = connect(t);
    t.transport.send('a');
    t.transport.send('b', { text: 'x'.repeat(2000) });
    t.settle();
    assert.deepEqual(ws.frames().at(-1).t, 'evs');
    ws.drop(1009);
    t.clock.tick(1000);
    let again = t.WS.last();
    again.accept();
    again.push({ t: 'welcome', session: 's_1', resumed: true, ack: 0 });
    assert.deepEqual(again.frames().slice(1).map((f) => [f.t, f.name]), [['ev', 'a'], ['ev', 'b']]);
    again.push({ t: 'ack', seq: 1 });
    again.drop(1009);
    t.clock.tick(1000);
    again = t.WS.last();
    again.accept();
    again.push({ t: 'welcome', session: 's_1', resumed: true, ack: 1 });
    assert.deepEqual(again.events(), [], 'b was the one refused');
    t.transport.send('c');
    t.transport.send('d');
    t.settle();
    assert.deepEqual(again.frames().slice(1).map((f) => f.t), ['ev', 'ev']);
  });
});

describe('batches (evs)', () => {
  test('events tracked in one task leave in one evs frame; one cumulative ack clears them', () => {
    const t = setup();
    const ws = connect(t);
    for (const depth of [10, 20, 30]) t.transport.send('scroll', { depth });
    t.transport.send('click', { target: 'buy' });
    assert.equal(ws.frames().length, 1, 'only hello so far');
    t.settle();
    assert.deepEqual(ws.frames().slice(1), [
      {
        t: 'evs',
        events: [
          { seq: 1, name: 'scroll', props: { depth: 10 } },
          { seq: 2, name: 'scroll', props: { depth: 20 } },
          { seq: 3, name: 'scroll', props: { depth: 30 } },
          { seq: 4, name: 'click', props: { target: 'buy' } },
        ],
      },
    ]);
    const outbox = () => JSON.parse(t.win.sessionStorage.getItem(KEYS.outbox)).map((e) => e.seq);
    assert.deepEqual(outbox(), [1, 2, 3, 4], 'kept until acknowledged');
    ws.push({ t: 'ack', seq: 4 });
    assert.deepEqual(outbox(), []);
    t.transport.send('active');
    t.settle();
    assert.deepEqual(ws.frames().at(-1), { t: 'ev', seq: 5, name: 'active', props: {} }, 'the next task: a frame of its own');
  });

  test('an error names one event of a batch: that one is dropped, the rest waits for its ack', () => {
    const t = setup();
    const ws = connect(t);
    t.transport.send('scroll', { depth: 10 });
    t.transport.send('signup');
    t.transport.send('scroll', { depth: 20 });
    t.settle();
    ws.push({ t: 'error', code: 'unknown_event', reason: "unknown event 'signup'", seq: 2 });
    assert.deepEqual(JSON.parse(t.win.sessionStorage.getItem(KEYS.outbox)).map((e) => e.seq), [1, 3]);
    ws.push({ t: 'ack', seq: 3 });
    assert.equal(t.win.sessionStorage.getItem(KEYS.outbox), '[]');
  });

  test('events tracked while connecting or reconnecting go in one frame after welcome', () => {
    const t = setup();
    const ws = connect(t);
    t.transport.send('page_view', { path: '/' });
    t.settle();
    ws.drop(1006);
    for (const depth of [10, 20]) t.transport.send('scroll', { depth });
    t.settle(); // nothing to write on a closed socket
    t.clock.tick(1000);
    const again = t.WS.last();
    again.accept();
    t.transport.send('click');
    again.push({ t: 'welcome', session: 's_1', resumed: true, ack: 1 });
    assert.deepEqual(again.frames().slice(1), [
      { t: 'evs', events: [{ seq: 2, name: 'scroll', props: { depth: 10 } }, { seq: 3, name: 'scroll', props: { depth: 20 } }, { seq: 4, name: 'click', props: {} }] },
    ]);
    t.settle();
    assert.equal(again.frames().length, 2, 'the deferred write finds nothing left to send');
  });

  test('a frame holds at most 100 events, in seq order, with no gap between frames', () => {
    const t = setup();
    t.transport.start();
    for (let i = 0; i < 250; i++) t.transport.send('scroll', { depth: i % 100 });
    const ws = t.WS.last();
    ws.accept();
    ws.push({ t: 'welcome', session: 's_1', resumed: false, ack: 0 });
    const frames = ws.frames().slice(1);
    assert.deepEqual(frames.map((f) => f.events.length), [100, 100, 50]);
    assert.deepEqual(ws.events().map((e) => e.seq), Array.from({ length: 250 }, (_, i) => i + 1));
  });

  test('a frame stays under MAX_FRAME bytes', () => {
    const t = setup();
    t.transport.start();
    for (let i = 0; i < 5; i++) t.transport.send('note', { text: 'x'.repeat(30000) });
    const ws = t.WS.last();
    ws.accept();
    ws.push({ t: 'welcome', session: 's_1', resumed: false, ack: 0 });
    const frames = ws.sent.slice(1);
    assert.deepEqual(frames.map((f) => JSON.parse(f).t), ['evs', 'evs', 'ev']);
    assert.ok(frames.every((f) => Buffer.byteLength(f) <= 64 * 1024), frames.map((f) => f.length).join());
    assert.deepEqual(ws.events().map((e) => e.seq), [1, 2, 3, 4, 5]);
  });

  test("an event tracked on 'open' goes after the ones resent at welcome", () => {
    const t = setup({ onState: (s) => s === 'open' && t.transport.send('on_open') });
    t.transport.send('early');
    connect(t);
    t.settle();
    const ws = t.WS.last();
    assert.deepEqual(ws.frames().slice(1).map((f) => f.t), ['ev', 'ev']);
    assert.deepEqual(ws.events().map((e) => [e.seq, e.name]), [[1, 'early'], [2, 'on_open']]);
  });

  test('MessagePack batches are binary evs frames', () => {
    const t = setup({ codecs: [msgpack, json] });
    t.transport.start();
    const ws = t.WS.last();
    ws.accept('nudge.v1.msgpack');
    ws.onmessage({ data: msgpack.encode({ t: 'welcome', session: 's_1', resumed: false, ack: 0 }).buffer });
    t.transport.send('a', { n: 1 });
    t.transport.send('b');
    t.settle();
    assert.deepEqual(msgpack.decode(ws.sent[1].buffer), {
      t: 'evs',
      events: [
        { seq: 1, name: 'a', props: { n: 1 } },
        { seq: 2, name: 'b', props: {} },
      ],
    });
  });

  test('by default the write waits for the end of the task (a microtask), not for a timer', async () => {
    const t = setup({ defer: undefined });
    const ws = connect(t);
    t.transport.send('a');
    t.transport.send('b');
    assert.equal(ws.frames().length, 1);
    await null;
    assert.deepEqual(ws.frames()[1].events.map((e) => e.name), ['a', 'b']);
    assert.equal(t.clock.pending, 1, 'only the ping timer');
  });
});

describe('show', () => {
  test('is handed over once and acknowledged, a resend is only acknowledged', () => {
    const t = setup();
    const ws = connect(t);
    const show = { t: 'show', seq: 1, campaign: 'welcome', kind: 'modal', title: 'Hello' };
    ws.push(show);
    assert.equal(t.shown.length, 1);
    assert.equal(t.shown[0].title, 'Hello');
    ws.push(show);
    assert.equal(t.shown.length, 1, 'not shown twice');
    assert.deepEqual(
      ws.frames().filter((f) => f.t === 'ack'),
      [
        { t: 'ack', seq: 1 },
        { t: 'ack', seq: 1 },
      ],
    );
    assert.equal(t.win.sessionStorage.getItem(KEYS.rx), '1');
  });

  test('messages resent after a reconnect are not shown again', () => {
    const t = setup();
    const ws = connect(t);
    ws.push({ t: 'show', seq: 1, kind: 'toast' });
    ws.push({ t: 'show', seq: 2, kind: 'toast' });
    ws.drop(1006);
    t.clock.tick(1000);
    const again = t.WS.last();
    again.accept();
    assert.equal(again.frames()[0].rx, 2);
    again.push({ t: 'welcome', session: 's_1', resumed: true, ack: 0 });
    again.push({ t: 'show', seq: 2, kind: 'toast' });
    again.push({ t: 'show', seq: 3, kind: 'toast' });
    assert.deepEqual(t.shown.map((m) => m.seq), [1, 2, 3]);
  });

  test('the ack goes out before the handler runs, and a throwing handler changes nothing', () => {
    const order = [];
    let ws;
    const t = setup({
      onShow: () => {
        order.push(ws.frames().at(-1).t);
        throw new Error('boom');
      },
    });
    ws = connect(t);
    ws.push({ t: 'show', seq: 1, kind: 'toast' });
    assert.deepEqual(order, ['ack']);
    assert.equal(t.transport.state, 'open');
  });
});

describe('keep-alive', () => {
  test('pings every 25 s; a pong keeps the connection', () => {
    const t = setup();
    const ws = connect(t);
    t.clock.tick(25000);
    assert.deepEqual(ws.frames().at(-1), { t: 'ping' });
    t.clock.tick(5000);
    ws.push({ t: 'pong' });
    t.clock.tick(20000);
    assert.equal(t.transport.state, 'open');
    assert.equal(t.WS.sockets.length, 1);
  });

  test('no frame within 10 s of a ping closes and reconnects', () => {
    const t = setup({ random: () => 0.5 });
    const ws = connect(t);
    t.clock.tick(25000 + 10000);
    assert.equal(ws.closedWith.code, 1000);
    assert.equal(ws.onclose, null, 'the dead socket is detached');
    assert.equal(t.transport.state, 'closed');
    t.clock.tick(250);
    assert.equal(t.WS.sockets.length, 2);
    assert.equal(t.transport.state, 'connecting');
  });
});

describe('close codes', () => {
  for (const code of [4400, 4401, 4403, 4409]) {
    test(`${code} stops for good`, () => {
      const t = setup();
      const ws = connect(t);
      ws.drop(code);
      assert.equal(t.transport.state, 'failed');
      assert.equal(t.clock.pending, 0);
      t.clock.tick(120000);
      t.transport.reconnectNow();
      t.transport.start();
      assert.equal(t.WS.sockets.length, 1);
      assert.equal(t.transport.send('x'), 0);
    });
  }

  for (const code of [4429, 1001, 1006, 1000, 4408]) {
    test(`${code} reconnects after a backoff delay`, () => {
      const t = setup();
      const ws = connect(t);
      ws.drop(code);
      assert.equal(t.transport.state, 'closed');
      assert.equal(t.clock.pending, 1, 'only the reconnect timer');
      t.clock.tick(4000); // the longest first delay (4429 starts at step 3)
      assert.equal(t.WS.sockets.length, 2);
      assert.equal(t.transport.state, 'connecting');
    });
  }

  test('a restart hint is honoured: reconnect after exactly the delay the server drew', () => {
    const t = setup({ random: () => 0 });
    const ws = connect(t);
    ws.drop(1012, 'restart retry=7345');
    assert.deepEqual(t.clock.delays(), [7345]);
    t.clock.tick(7344);
    assert.equal(t.WS.sockets.length, 1);
    t.clock.tick(1);
    assert.equal(t.WS.sockets.length, 2);
  });

  test('a restart hint is capped, and a close without one backs off as usual', () => {
    const t = setup({ random: () => 0.5 });
    connect(t).drop(1012, 'restart retry=99999999');
    assert.deepEqual(t.clock.delays(), [60000]);
    const u = setup({ random: () => 0.5 });
    connect(u).drop(1012, 'bye');
    assert.ok(u.clock.delays()[0] < 500);
  });

  test('4429 starts higher on the backoff curve', () => {
    const t = setup({ random: () => 0.999 });
    const ws = connect(t);
    ws.drop(4429);
    assert.ok(t.clock.delays()[0] >= 2000, `delay ${t.clock.delays()[0]}`);
  });
});

describe('reconnection', () => {
  test('delays grow within [0, min(30 s, 500 ms * 2^step)) and reset after welcome', () => {
    const t = setup({ random: () => 0.9999 });
    t.transport.start();
    const delays = [];
    for (let i = 0; i < 10; i++) {
      t.WS.last().drop(1006);
      const [delay] = t.clock.delays();
      delays.push(delay);
      assert.ok(delay >= 0 && delay < Math.min(30000, 500 * 2 ** i), `step ${i}: ${delay}`);
      t.clock.tick(delay);
    }
    assert.ok(delays[3] > delays[0] && delays.at(-1) >= 29000, String(delays));
    const ws = t.WS.last();
    ws.accept();
    ws.push({ t: 'welcome', session: 's_1', resumed: false, ack: 0 });
    ws.drop(1006);
    assert.ok(t.clock.delays()[0] < 500, 'back to the first step');
  });

  test("reconnectNow (the 'online' event) skips the wait", () => {
    const t = setup({ random: () => 0.9 });
    const ws = connect(t);
    ws.drop(1006);
    t.transport.reconnectNow();
    assert.equal(t.WS.sockets.length, 2);
    assert.equal(t.clock.pending, 1, 'only the handshake timer');
  });

  test('reconnectNow on an open socket probes it with a ping', () => {
    const t = setup();
    const ws = connect(t);
    t.transport.reconnectNow();
    assert.deepEqual(ws.frames().at(-1), { t: 'ping' });
    t.clock.tick(10000);
    assert.equal(t.transport.state, 'closed');
  });

  test('shutdown closes the socket and leaves no timer behind', () => {
    const t = setup();
    const ws = connect(t);
    t.transport.send('a');
    ws.push({ t: 'ping' }); // unknown to the client: ignored
    assert.ok(t.clock.pending > 0);
    t.transport.shutdown();
    assert.equal(t.clock.pending, 0);
    assert.equal(ws.closedWith.code, 1000);
    assert.equal(t.transport.state, 'closed');
    t.clock.tick(120000);
    t.transport.reconnectNow();
    assert.equal(t.WS.sockets.length, 1);
  });

  test('shutdown while waiting to reconnect cancels the attempt', () => {
    const t = setup();
    const ws = connect(t);
    ws.drop(1006);
    t.transport.shutdown();
    assert.equal(t.clock.pending, 0);
    assert.ok(t.clock.cleared.length > 0);
    t.clock.tick(60000);
    assert.equal(t.WS.sockets.length, 1);
  });

  test('suspend closes without giving up; reconnectNow resumes', () => {
    const t = setup();
    const ws = connect(t);
    t.transport.suspend();
    assert.equal(ws.closedWith.code, 1000);
    assert.equal(t.clock.pending, 0);
    t.transport.reconnectNow();
    assert.equal(t.WS.sockets.length, 2);
  });
});

describe('MessagePack', () => {
  test('offered first when configured; binary frames once the server picks it', () => {
    const t = setup({ codecs: [msgpack, json] });
    t.transport.start();
    const ws = t.WS.last();
    assert.deepEqual(ws.protocols, ['nudge.v1.msgpack', 'nudge.v1.json']);
    ws.accept('nudge.v1.msgpack');
    const hello = msgpack.decode(ws.sent[0].buffer);
    assert.equal(ws.sent[0] instanceof Uint8Array, true);
    assert.equal(hello.t, 'hello');
    assert.equal(hello.key, 'pk_demo');
    const push = (record) => ws.onmessage({ data: msgpack.encode(record).buffer });
    push({ t: 'welcome', session: 's_1', resumed: false, ack: 0, grace: 300 });
    assert.equal(t.transport.state, 'open');
    t.transport.send('add_to_cart', { id: 'mug', name: 'Mug', price: 12.5, quantity: 1 });
    t.settle();
    assert.deepEqual(msgpack.decode(ws.sent[1].buffer), {
      t: 'ev',
      seq: 1,
      name: 'add_to_cart',
      props: { id: 'mug', name: 'Mug', price: 12.5, quantity: 1 },
    });
    push({ t: 'show', seq: 1, kind: 'toast', title: 'Hi' });
    assert.equal(t.shown[0].title, 'Hi');
    assert.deepEqual(msgpack.decode(ws.sent[2].buffer), { t: 'ack', seq: 1 });
    push({ t: 'ack', seq: 1 });
    assert.equal(t.win.sessionStorage.getItem(KEYS.outbox), '[]');
  });

  test('a server that speaks only JSON gets JSON', () => {
    const t = setup({ codecs: [msgpack, json] });
    t.transport.start();
    const ws = t.WS.last();
    ws.accept('nudge.v1.json');
    assert.equal(ws.frames()[0].t, 'hello');
  });
});

describe('server ping', () => {
  test('a ping frame from the server is answered with pong', () => {
    const t = setup();
    const ws = connect(t);
    ws.push({ t: 'ping' });
    assert.deepEqual(ws.frames().at(-1), { t: 'pong' });
  });
});

describe('beacon', () => {
  test('nothing to flush without a session or without unacknowledged events', () => {
    const t = setup();
    t.transport.send('a');
    assert.equal(t.transport.beacon(), null, 'no session yet');
    const ws = connect(t);
    ws.push({ t: 'ack', seq: 1 });
    assert.equal(t.transport.beacon(), null, 'all acknowledged');
  });

  test('carries key, visitor, session and every unacknowledged event, keeping them', () => {
    const t = setup();
    const ws = connect(t, { session: 's_beacon' });
    t.transport.send('a', { n: 1 });
    t.transport.send('b');
    const body = JSON.parse(t.transport.beacon());
    assert.equal(body.key, 'pk_demo');
    assert.equal(body.session, 's_beacon');
    assert.equal(body.visitor, t.win.localStorage.getItem(KEYS.visitor));
    assert.deepEqual(body.events, [
      { t: 'ev', seq: 1, name: 'a', props: { n: 1 } },
      { t: 'ev', seq: 2, name: 'b', props: {} },
    ]);
    assert.equal(JSON.parse(t.win.sessionStorage.getItem(KEYS.outbox)).length, 2, 'still kept for the next page');
    ws.push({ t: 'ack', seq: 1 });
    assert.deepEqual(JSON.parse(t.transport.beacon()).events.map((e) => e.seq), [2]);
    t.transport.shutdown();
    assert.equal(t.transport.beacon(), null, 'nothing after shutdown');
  });

  test('a long outbox is cut to its oldest events, never leaving a gap', () => {
    const t = setup();
    connect(t);
    for (let i = 0; i < 40; i++) t.transport.send('e', { text: 'x'.repeat(100) });
    const body = t.transport.beacon(1000);
    assert.ok(body.length <= 1000);
    const seqs = JSON.parse(body).events.map((e) => e.seq);
    assert.deepEqual(seqs, seqs.map((_, i) => i + 1));
    assert.equal(t.transport.beacon(10), null, 'not even one fits');
  });
});
