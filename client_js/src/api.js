// The public API. The loader snippet a site pastes defines a stub `window.nudge` that queues
// calls in `nudge.q` while nudge.js downloads; install() replaces the stub by the real API and
// replays the queue, so `nudge('track', …)` and `nudge.track(…)` work before and after the load
// alike. Transport, capture and rendering are wired together here and nowhere else. Two entry
// points call install(): index.js (the script tag build) and module.js (the ES module build).

import { startCapture, pageProps } from './capture.js';
import { State } from './codes.js';
import { createRenderer } from './render.js';
import { msgpack, json } from './codec.js';
import { KEYS, memoryStore, openStore } from './storage.js';
import { Transport } from './transport.js';

const SNIPPET_VERSION = '0.1.0';
const EARLY_LIMIT = 100; // events tracked before init, kept until it runs

const warn = (...a) => console.warn('[nudge]', ...a);

/**
 * Install the API on `win` and replay the stub's queue. Returns the API; if nudge.js already
 * ran on this page (included twice), returns the installed one and changes nothing.
 *
 * `env` overrides what comes from the page, for tests: WebSocket, timers, random, now,
 * scriptSrc (the address nudge.js was loaded from; its origin is the default host).
 */
export function install(win, env = {}) {
  const stub = win.nudge;
  if (stub && stub.loaded) return stub;
  const doc = win.document;
  // [local, session]: the browser's stores, and memory-only ones made for `storage: 'memory'`.
  // The opt-out is always kept in the browser's: remembering a refusal is what the visitor asked.
  const stored = [openStore(win, 'localStorage'), openStore(win, 'sessionStorage')];
  let memory = null;
  const timers = env.timers || win;
  const handlers = []; // onMessage hooks
  let options = null; // init options, once init ran
  let transport = null;
  let capture = null;
  let renderer = null;
  let early = []; // [name, props] tracked before init
  let waiting = []; // visitorId callbacks made before there was a visitor id
  let undo = []; // removes the window listeners added by init

  function emit(type, detail) {
    try {
      win.dispatchEvent(new win.CustomEvent(type, { detail }));
    } catch (e) {
      // a page without CustomEvent: nothing to tell
    }
  }

  function init(o) {
    if (options) return warn('init ran already; call shutdown() first to start again');
    o = o || {};
    if (typeof o.siteKey !== 'string' || o.siteKey.indexOf('pk_') !== 0) {
      // Anything but a publishable key (a secret one above all) must never reach the page.
      return warn('init needs the publishable siteKey (pk_…) of the site');
    }
    options = Object.assign(
      { idleAfter: 10, clickAll: false, render: true, exitIntent: true, visibility: true },
      o,
    );
    const nav = win.navigator || {};
    // Opted out, or Global Privacy Control on and the site asked us to honour it: nothing is
    // captured, stored or sent, and no socket is opened.
    if (stored[0].get(KEYS.optOut) === '1' || (options.respectGPC && nav.globalPrivacyControl)) {
      early = [];
      return;
    }
    const [local, session] =
      options.storage === 'memory' ? (memory = memory || [memoryStore(), memoryStore()]) : stored;

    const host = String(o.host || originOf(env.scriptSrc, win.location.href)).replace(/\/+$/, '');
    transport = new Transport({
      url: host.replace(/^http/, 'ws') + '/ws',
      key: o.siteKey,
      codecs: options.encoding === 'msgpack' ? [msgpack, json] : [json],
      local,
      session,
      WebSocket: env.WebSocket || win.WebSocket,
      timers,
      random: env.random,
      onShow: deliver,
      onState: (state) => emit('nudge:state', state),
    });
    if (options.render) {
      renderer = createRenderer({
        win,
        doc,
        timers,
        onShown(msg) {
          track('shown', about(msg));
          emit('nudge:message', msg);
        },
        onClick: (msg) => track('clicked', Object.assign(about(msg), { action: 'cta' })),
        onDismiss: (msg) => track('dismissed', about(msg)),
      });
    }
    capture = startCapture({
      win,
      doc,
      track,
      idleAfter: Number(options.idleAfter) || 0,
      clickAll: !!options.clickAll,
      exitIntent: !!options.exitIntent,
      visibility: !!options.visibility,
      timers,
      now: env.now,
    });
    listen('online', () => transport.reconnectNow());
    // An open socket keeps the page out of the back/forward cache: close it when the page is
    // hidden, resume the session if the page is shown again from the cache. Before closing, the
    // events the server has not acknowledged go out once more with sendBeacon, which outlives
    // the page; the server applies each seq once, however often it arrives.
    listen('pagehide', () => {
      const body = transport.beacon();
      try {
        if (body && nav.sendBeacon) nav.sendBeacon(host + '/beacon?key=' + encodeURIComponent(transport.key), body);
      } catch (e) {
        // refused (too large, or not allowed here): the next page resends them anyway
      }
      transport.suspend();
    });
    listen('pageshow', (e) => e.persisted && transport.reconnectNow());
    for (const [name, props] of early) transport.send(name, props);
    early = [];
    for (const fn of waiting.splice(0)) tell(fn, transport.visitor);
    transport.start();
  }

  /**
   * The visitor id, as the server knows it (what POST /api/events calls `visitor`): a string
   * once init has run, else null (before init, after shutdown, opted out). With a callback,
   * also calls `fn(id)` as soon as there is one — the way to ask before nudge.js has loaded.
   */
  function visitorId(fn) {
    const id = transport ? transport.visitor : null;
    if (typeof fn === 'function') {
      if (id) tell(fn, id);
      else waiting.push(fn);
    }
    return id;
  }

  function tell(fn, id) {
    try {
      fn(id);
    } catch (e) {
      warn('visitorId callback failed', e);
    }
  }

  function deliver(msg) {
    for (const fn of handlers.slice()) {
      try {
        fn(msg);
      } catch (e) {
        warn('onMessage handler failed', e);
      }
    }
    if (renderer) renderer.show(msg);
    else emit('nudge:message', msg);
  }

  function track(name, props) {
    if (typeof name !== 'string' || !name) return warn('track needs an event name');
    if (transport) transport.send(name, props);
    else if (!options && early.length < EARLY_LIMIT) early.push([name, props]);
  }

  /** Traits of the visitor (plan, vip, …): a flat map, kept by the server for targeting. */
  function identify(traits) {
    track('identify', traits);
  }

  function page(props) {
    if (capture) capture.page(props);
    else track('page_view', Object.assign(pageProps(win, doc, doc.referrer), props));
  }

  function shutdown() {
    if (capture) capture.stop();
    if (renderer) renderer.destroy();
    if (transport) transport.shutdown();
    undo.forEach((f) => f());
    undo = [];
    transport = capture = renderer = options = null;
  }

  /** Stop and forget this visitor; stays off on later pages until optOut(false). */
  function optOut(out) {
    if (out === false) return stored[0].remove(KEYS.optOut);
    shutdown();
    for (const [local, session] of memory ? [stored, memory] : [stored]) {
      local.remove(KEYS.visitor);
      for (const key of [KEYS.session, KEYS.rx, KEYS.seq, KEYS.outbox]) session.remove(key);
    }
    stored[0].set(KEYS.optOut, '1');
  }

  function onMessage(fn) {
    if (typeof fn !== 'function') return warn('onMessage needs a function');
    handlers.push(fn);
    return () => {
      const i = handlers.indexOf(fn);
      if (i >= 0) handlers.splice(i, 1);
    };
  }

  function listen(type, fn) {
    win.addEventListener(type, fn);
    undo.push(() => win.removeEventListener(type, fn));
  }

  const methods = { init, track, identify, page, shutdown, optOut, onMessage, visitorId };
  const api = function nudge(method) {
    if (!Object.prototype.hasOwnProperty.call(methods, method)) return warn('unknown method', method);
    return methods[method].apply(null, Array.prototype.slice.call(arguments, 1));
  };
  Object.assign(api, methods, { loaded: true, version: SNIPPET_VERSION });
  Object.defineProperty(api, 'state', {
    enumerable: true,
    get: () => (transport ? transport.state : State.CLOSED),
  });

  win.nudge = api;
  const queue = stub && stub.q && stub.q.length ? Array.from(stub.q) : [];
  for (const call of queue) {
    try {
      api.apply(null, Array.from(call));
    } catch (e) {
      warn('queued call failed', e);
    }
  }
  return api;
}

/** {msg, campaign} of the events that report on a message. */
function about(msg) {
  return { msg: msg.seq, campaign: msg.campaign };
}

function originOf(src, page) {
  try {
    return new URL(src || page, page).origin;
  } catch (e) {
    return new URL(page).origin;
  }
}
