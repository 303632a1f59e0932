import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, test } from 'node:test';

import { install } from '../src/api.js';
import { msgpack } from '../src/codec.js';
import { KEYS } from '../src/storage.js';
import { FakeTarget, fakeWebSocket, fakeWindow } from '../test-support/fakes.js';

// The loader snippet exactly as README.md tells sites to paste it.
const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
const LOADER = readme.match(/```html\n<script>\n([\s\S]*?)<\/script>\n```/)[1];

/** A page that ran the loader snippet; `extra` is page script run after it. */
function page(extra = '', options = {}) {
  const WS = fakeWebSocket();
  const win = fakeWindow({ WebSocket: WS, ...options });
  const head = [];
  win.document.head = { appendChild: (el) => head.push(el) };
  win.document.createElement = (tag) => ({ tagName: tag });
  // The snippet is page script: its free `nudge` is window.nudge.
  new Function('window', 'document', `with (window) {${LOADER}${extra}}`)(win, win.document);
  return { win, WS, head, clock: win.clock };
}

function load(p, env = {}) {
  return install(p.win, { timers: p.clock, now: p.clock.now, scriptSrc: 'https://nudge.example/nudge.js', ...env });
}

function hello(p) {
  const ws = p.WS.last();
  ws.accept();
  return ws.frames()[0];
}

function welcome(ws, extra = {}) {
  ws.accept();
  ws.push({ t: 'welcome', session: 's_1', resumed: false, ack: 0, grace: 300, ...extra });
}

describe('loader and replay', () => {
  test('the loader queues calls and adds nudge.js to the page', () => {
    const p = page("nudge('track', 'a', {n: 1}); nudge.track('b', {n: 2});");
    assert.equal(p.head.length, 1);
    assert.equal(p.head[0].src, '/nudge.js');
    assert.equal(p.head[0].async, 1);
    assert.deepEqual(
      p.win.nudge.q.map((c) => Array.from(c)),
      [['init', { siteKey: 'pk_demo' }], ['track', 'a', { n: 1 }], ['track', 'b', { n: 2 }]],
    );
  });

  test('install replays the queue in order, both call styles, then takes calls directly', async () => {
    const seen = [];
    const p = page(`
      nudge.q[0][1].render = false;
      nudge.onMessage(function (m) { window.seen.push(m.seq) });
      nudge('track', 'add_to_cart', {id: 'mug', name: 'Mug', price: 12.5, quantity: 1});
      nudge.track('purchase', {value: 12.5});`);
    p.win.seen = seen;
    const api = load(p);
    assert.equal(p.win.nudge, api);
    assert.equal(api.loaded, true);
    const ws = p.WS.last();
    assert.equal(ws.url, 'wss://nudge.example/ws');
    welcome(ws);
    api.track('a');
    api('track', 'b', { x: 1 });
    await null; // tracked in one task: written together once it is done
    assert.deepEqual(ws.frames().at(-1).events.map((e) => e.name), ['a', 'b']);
    // (scroll depth is measured on the next animation frame, not yet run)
    assert.deepEqual(
      ws.events().map((e) => [e.seq, e.name]),
      [[1, 'page_view'], [2, 'add_to_cart'], [3, 'purchase'], [4, 'a'], [5, 'b']],
    );
    assert.deepEqual(ws.events()[1].props, { id: 'mug', name: 'Mug', price: 12.5, quantity: 1 });
    ws.push({ t: 'show', seq: 1, kind: 'toast' });
    assert.deepEqual(seen, [1]);
  });

  test('calls queued before init are sent once it runs', () => {
    const p = page("nudge.track('early', {n: 1});");
    p.win.nudge.q.push(p.win.nudge.q.shift()); // init last
    const api = load(p);
    welcome(p.WS.last());
    assert.deepEqual(p.WS.last().events().map((e) => e.name), ['page_view', 'early']);
    assert.equal(api.state, 'open');
  });

  test('a second copy of nudge.js changes nothing', () => {
    const p = page();
    const api = load(p);
    assert.equal(load(p), api);
    assert.equal(p.WS.sockets.length, 1);
  });

  test('unknown methods and bad init are refused with a warning', (t) => {
    const warn = t.mock.method(console, 'warn', () => {});
    const p = page();
    p.win.nudge.q.length = 0;
    const api = load(p);
    api('alias', 'u1');
    api.init({ siteKey: 'sk_live_secret' });
    api.init({});
    assert.equal(p.WS.sockets.length, 0);
    assert.equal(warn.mock.callCount(), 3);
  });
});

describe('state and events', () => {
  test('nudge.state follows the connection and cannot be assigned', (t) => {
    t.mock.method(console, 'warn', () => {});
    const p = page();
    p.win.nudge.q.length = 0;
    const api = load(p);
    const states = [];
    p.win.addEventListener('nudge:state', (e) => states.push(e.detail));
    assert.equal(api.state, 'closed');
    api.init({ siteKey: 'pk_demo', host: 'http://localhost:8000/' });
    assert.equal(p.WS.last().url, 'ws://localhost:8000/ws');
    assert.equal(api.state, 'connecting');
    welcome(p.WS.last());
    assert.equal(api.state, 'open');
    assert.throws(() => {
      api.state = 'failed';
    }, TypeError);
    p.WS.last().drop(4403);
    assert.equal(api.state, 'failed');
    assert.deepEqual(states, ['connecting', 'open', 'failed']);
  });

  test('with render: false, messages go to onMessage and to a nudge:message event', () => {
    const p = page();
    p.win.nudge.q.length = 0;
    const api = load(p);
    const hooked = [];
    const dispatched = [];
    api.onMessage((m) => hooked.push(m.campaign));
    const off = api.onMessage((m) => hooked.push('removed hook'));
    off();
    p.win.addEventListener('nudge:message', (e) => dispatched.push(e.detail.seq));
    api.init({ siteKey: 'pk_demo', render: false });
    const ws = p.WS.last();
    welcome(ws);
    const show = { t: 'show', seq: 1, campaign: 'cart-abandoned', kind: 'modal', title: 'Still there?' };
    ws.push(show);
    ws.push(show);
    assert.deepEqual(hooked, ['cart-abandoned']);
    assert.deepEqual(dispatched, [1]);
  });

  test("'online' reconnects at once", () => {
    const p = page();
    load(p, { random: () => 0.99 });
    welcome(p.WS.last());
    p.WS.last().drop(1006);
    p.win.fire('online');
    assert.equal(p.WS.sockets.length, 2);
  });

  test('pagehide closes the socket; pageshow from the cache resumes', () => {
    const p = page();
    const api = load(p);
    welcome(p.WS.last());
    p.win.fire('pagehide', { persisted: true });
    assert.equal(p.WS.last().closedWith.code, 1000);
    assert.equal(api.state, 'closed');
    p.win.fire('pageshow', { persisted: true });
    assert.equal(p.WS.sockets.length, 2);
  });
});

describe('shutdown and opt-out', () => {
  test('shutdown closes the socket and leaves no listener or timer', () => {
    const p = page();
    const api = load(p);
    const ws = p.WS.last();
    welcome(ws);
    p.win.fire('scroll');
    assert.ok(p.clock.pending > 0);
    api.shutdown();
    assert.equal(ws.closedWith.code, 1000);
    assert.equal(p.clock.pending, 0);
    assert.equal(p.win.listeners.length, 0);
    assert.equal(p.win.document.listeners.length, 0);
    assert.equal(api.state, 'closed');
    p.clock.tick(600000);
    assert.equal(p.WS.sockets.length, 1);
    api.init({ siteKey: 'pk_demo' });
    assert.equal(p.WS.sockets.length, 2, 'init works again');
  });

  test('visitorId: a callback queued before the load, then the id at once', () => {
    const seen = [];
    const p = page('nudge.visitorId(function (id) { window.seen.push(id) });');
    p.win.seen = seen;
    p.win.nudge.q.push(p.win.nudge.q.shift()); // asked before init, too
    const api = load(p);
    const id = api.visitorId();
    assert.match(id, /^v_[A-Za-z0-9_-]{8,64}$/);
    assert.equal(id, p.win.localStorage.getItem(KEYS.visitor));
    assert.equal(hello(p).visitor, id, 'the id the server is told, the one a backend sends');
    assert.deepEqual(seen, [id]);
    api.visitorId((again) => seen.push(again));
    assert.deepEqual(seen, [id, id], 'called at once when there is an id');
    welcome(p.WS.last(), { visitor: 'v_fromserver1' });
    assert.equal(api.visitorId(), 'v_fromserver1', 'the server’s, once it assigned another');
    api.optOut();
    assert.equal(api.visitorId(), null);
  });

  test('visitorId is null before init', () => {
    const p = page();
    p.win.nudge.q.length = 0; // no init
    const api = load(p);
    assert.equal(api.visitorId(), null);
  });

  test('optOut forgets the visitor and keeps later pages silent', () => {
    const p = page();
    const api = load(p);
    welcome(p.WS.last());
    assert.ok(p.win.localStorage.getItem(KEYS.visitor));
    api.optOut();
    assert.equal(p.win.localStorage.getItem(KEYS.visitor), null);
    assert.equal(p.win.sessionStorage.getItem(KEYS.session), null);
    assert.equal(p.win.localStorage.getItem(KEYS.optOut), '1');

    const next = page('', {});
    next.win.localStorage = p.win.localStorage;
    const api2 = load(next);
    assert.equal(next.WS.sockets.length, 0);
    api2.track('x');
    assert.equal(api2.state, 'closed');
    api2.optOut(false);
    assert.equal(next.win.localStorage.getItem(KEYS.optOut), null);
  });
});

describe('identify', () => {
  test('sends the traits as an identify event, before and after load', async () => {
    const p = page("nudge.identify({plan: 'pro'});");
    const api = load(p);
    welcome(p.WS.last());
    api.identify({ vip: true });
    await null;
    assert.deepEqual(
      p.WS.last().events().filter((e) => e.name === 'identify').map((e) => e.props),
      [{ plan: 'pro' }, { vip: true }],
    );
  });
});

describe('privacy', () => {
  test('respectGPC: with Global Privacy Control on, nothing is captured, stored or sent', () => {
    const p = page("nudge.q[0][1].respectGPC = true; nudge.track('early');");
    p.win.navigator = { globalPrivacyControl: true };
    const api = load(p);
    api.track('later');
    assert.equal(p.WS.sockets.length, 0);
    assert.equal(p.win.localStorage.map.size, 0);
    assert.equal(p.win.sessionStorage.map.size, 0);
    assert.equal(p.win.listeners.length, 0);
    assert.equal(api.state, 'closed');
  });

  test('GPC is ignored unless the site asks to honour it', () => {
    const p = page();
    p.win.navigator = { globalPrivacyControl: true };
    load(p);
    assert.equal(p.WS.sockets.length, 1);
  });

  test("storage: 'memory' writes nothing to the browser's storage", () => {
    const p = page("nudge.q[0][1].storage = 'memory';");
    const api = load(p);
    const ws = p.WS.last();
    welcome(ws, { visitor: 'v_fromserver1' });
    api.track('a');
    ws.push({ t: 'show', seq: 1, kind: 'toast' });
    assert.equal(p.win.localStorage.map.size, 0);
    assert.equal(p.win.sessionStorage.map.size, 0);
    ws.drop(1006);
    p.clock.tick(1000);
    p.WS.last().accept();
    const hello = p.WS.last().frames()[0];
    assert.equal(hello.session, 's_1', 'the session is still resumed within the page');
    assert.equal(hello.visitor, 'v_fromserver1');
    assert.equal(hello.rx, 1);
  });

  test("optOut is remembered even with storage: 'memory'", () => {
    const p = page("nudge.q[0][1].storage = 'memory';");
    const api = load(p);
    api.optOut();
    assert.deepEqual([...p.win.localStorage.map], [[KEYS.optOut, '1']]);
  });
});

describe('transport options', () => {
  test("encoding: 'msgpack' offers nudge.v1.msgpack first", () => {
    const p = page("nudge.q[0][1].encoding = 'msgpack';");
    load(p);
    const ws = p.WS.last();
    assert.deepEqual(ws.protocols, ['nudge.v1.msgpack', 'nudge.v1.json']);
    ws.accept('nudge.v1.msgpack');
    assert.equal(msgpack.decode(ws.sent[0].buffer).t, 'hello');
  });
});

describe('last flush on page hide', () => {
  function hidden(p) {
    const beacons = [];
    p.win.navigator = { sendBeacon: (url, body) => beacons.push([url, JSON.parse(body)]) && true };
    return beacons;
  }

  test('pagehide sends the unacknowledged events to /beacon of the host, then closes', () => {
    const p = page();
    const beacons = hidden(p);
    const api = load(p);
    const ws = p.WS.last();
    welcome(ws, { session: 's_tab' });
    ws.push({ t: 'ack', seq: 1 }); // the page view
    api.track('clicked', { msg: 1 });
    p.win.fire('pagehide', { persisted: false });
    assert.equal(beacons.length, 1);
    const [url, body] = beacons[0];
    assert.equal(url, 'https://nudge.example/beacon?key=pk_demo'); // the key judged before the body is read
    assert.equal(body.session, 's_tab');
    assert.equal(body.key, 'pk_demo');
    assert.deepEqual(body.events.map((e) => [e.seq, e.name]), [[2, 'clicked']]);
    assert.equal(ws.closedWith.code, 1000);
  });

  test('no beacon when everything was acknowledged, or after opt-out', () => {
    const p = page();
    const beacons = hidden(p);
    const api = load(p);
    const ws = p.WS.last();
    welcome(ws);
    ws.push({ t: 'ack', seq: 1 });
    p.win.fire('pagehide', { persisted: true });
    api.track('x');
    api.optOut();
    p.win.fire('pagehide', { persisted: false });
    assert.equal(beacons.length, 0);
  });

  test('a browser that refuses the beacon changes nothing', () => {
    const p = page();
    p.win.navigator = {
      sendBeacon() {
        throw new TypeError('not allowed');
      },
    };
    load(p);
    welcome(p.WS.last());
    p.win.fire('pagehide', { persisted: false });
    assert.equal(p.win.nudge.state, 'closed');
  });
});

test('FakeTarget removes listeners added with the same capture flag', () => {
  const t = new FakeTarget();
  const fn = () => {};
  t.addEventListener('x', fn, { capture: true });
  t.removeEventListener('x', fn, true);
  assert.equal(t.listeners.length, 0);
});

describe('types', () => {
  test('types/nudge.d.ts declares every method the API has, and the loader stubs them all', () => {
    const dts = readFileSync(new URL('../types/nudge.d.ts', import.meta.url), 'utf8');
    const body = dts.slice(dts.indexOf('export interface Nudge extends'), dts.indexOf('/** Install the API'));
    const declared = [...body.matchAll(/^ {2}([a-zA-Z]+)\(/gm)].map((m) => m[1]).sort();
    const p = page();
    const api = load(p);
    const methods = Object.keys(api).filter((k) => typeof api[k] === 'function').sort();
    assert.deepEqual(declared, methods);
    const stubbed = JSON.parse(LOADER.match(/(\["init"[^\]]*\])/)[1]).sort();
    assert.deepEqual(stubbed, methods.filter((m) => m !== 'init').concat('init').sort());
  });
});
