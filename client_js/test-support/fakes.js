// Stand-ins for the browser, so the snippet's modules run under `node --test`.
// They live outside test/ because node --test runs every .js file under a test/ folder.

/** A clock whose timers run only when the test advances it. */
export class FakeClock {
  constructor() {
    this.time = 0;
    this.cleared = []; // ids passed to clearTimeout
    this._id = 0;
    this._timers = new Map(); // id -> {fn, at, ms}
    this.setTimeout = this.setTimeout.bind(this);
    this.clearTimeout = this.clearTimeout.bind(this);
    this.now = () => this.time;
  }

  setTimeout(fn, ms = 0) {
    const id = ++this._id;
    this._timers.set(id, { fn, at: this.time + Math.max(0, ms), ms });
    return id;
  }

  clearTimeout(id) {
    this.cleared.push(id);
    this._timers.delete(id);
  }

  /** Number of timers waiting to run. */
  get pending() {
    return this._timers.size;
  }

  /** Delays (ms) the waiting timers were set with, soonest first. */
  delays() {
    return [...this._timers.values()].sort((a, b) => a.at - b.at).map((t) => t.ms);
  }

  /** Advance by `ms`, running every timer that falls due, in order. */
  tick(ms) {
    const end = this.time + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this._timers) if (t.at <= end && (!next || t.at < next[1].at)) next = [id, t];
      if (!next) break;
      this._timers.delete(next[0]);
      this.time = next[1].at;
      next[1].fn();
    }
    this.time = end;
  }
}

/** A WebSocket class whose instances the test drives from the server's side. */
export function fakeWebSocket() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.protocol = '';
      this.readyState = 0;
      this.sent = []; // raw frames the client wrote
      this.closedWith = null; // {code} once the client called close()
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error('InvalidStateError');
      this.sent.push(data);
    }
    close(code = 1000) {
      this.readyState = 3;
      this.closedWith = { code };
    }
    // -- the server's side
    accept(protocol = 'nudge.v1.json') {
      this.protocol = protocol;
      this.readyState = 1;
      if (this.onopen) this.onopen({ type: 'open' });
    }
    push(record) {
      if (this.onmessage) this.onmessage({ data: JSON.stringify(record) });
    }
    drop(code = 1006, reason = '') {
      this.readyState = 3;
      if (this.onclose) this.onclose({ code, reason });
    }
    frames() {
      return this.sent.map((f) => JSON.parse(f));
    }
    /** Every event written, one record each: `ev` frames, and each event of an `evs` as an `ev`. */
    events() {
      return this.frames().flatMap((f) => (f.t === 'ev' ? [f] : f.t === 'evs' ? f.events.map((e) => ({ t: 'ev', ...e })) : []));
    }
  }
  FakeWebSocket.sockets = sockets;
  FakeWebSocket.last = () => sockets[sockets.length - 1];
  return FakeWebSocket;
}

/** Minimal event target that counts its listeners and takes plain objects as events. */
export class FakeTarget {
  constructor() {
    this.listeners = [];
  }
  addEventListener(type, fn, opts) {
    this.listeners.push({ type, fn, capture: capture(opts) });
  }
  removeEventListener(type, fn, opts) {
    const i = this.listeners.findIndex((l) => l.type === type && l.fn === fn && l.capture === capture(opts));
    if (i >= 0) this.listeners.splice(i, 1);
  }
  dispatchEvent(event) {
    this.fire(event.type, event);
    return true;
  }
  fire(type, event = {}) {
    if (event.type !== type) event.type = type; // a real Event's type is read-only
    for (const l of this.listeners.slice()) if (l.type === type) l.fn(event);
  }
}

function capture(opts) {
  return typeof opts === 'boolean' ? opts : !!(opts && opts.capture);
}

/** Storage with the Web Storage methods; `broken` makes every call throw, like a full quota. */
export class FakeStorage {
  constructor() {
    this.map = new Map();
    this.broken = false;
  }
  getItem(k) {
    if (this.broken) throw new Error('SecurityError');
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    if (this.broken) throw new Error('QuotaExceededError');
    this.map.set(k, String(v));
  }
  removeItem(k) {
    if (this.broken) throw new Error('SecurityError');
    this.map.delete(k);
  }
}

/** A fake element for click tests: closest() walks `parent`, attributes in `attrs`. */
export function fakeElement(tagName, attrs = {}, text = '', parent = null) {
  return {
    tagName: tagName.toUpperCase(),
    textContent: text,
    attrs,
    parent,
    getAttribute(name) {
      return name in this.attrs ? this.attrs[name] : null;
    },
    closest(selector) {
      for (let el = this; el; el = el.parent) if (matches(el, selector)) return el;
      return null;
    },
  };
}

// Just enough selector support for capture.js: tag lists and [attr].
function matches(el, selector) {
  return selector.split(',').some((s) => {
    const attr = s.match(/^\[([\w-]+)\]$/);
    if (attr) return attr[1] in el.attrs;
    return el.tagName.toLowerCase() === s.trim().split(/[[.]/)[0];
  });
}

// Node has a global CustomEvent only from version 19.
class FakeCustomEvent {
  constructor(type, init) {
    this.type = type;
    this.detail = init ? init.detail : null;
  }
}

/** A window with the parts of the browser the snippet uses, on a fake clock. */
export function fakeWindow({ href = 'https://shop.example/', clock = new FakeClock(), WebSocket } = {}) {
  const win = new FakeTarget();
  let url = new URL(href);
  const doc = new FakeTarget();
  doc.title = 'Shop';
  doc.referrer = 'https://search.example/';
  doc.documentElement = { scrollHeight: 800, clientHeight: 800, scrollTop: 0 };
  doc.body = { scrollHeight: 800 };
  const navigate = (u) => (url = new URL(u, url));
  Object.assign(win, {
    document: doc,
    location: {
      get href() {
        return url.href;
      },
      get pathname() {
        return url.pathname;
      },
      get search() {
        return url.search;
      },
      get origin() {
        return url.origin;
      },
      assign: (u) => (win.assigned = u),
    },
    history: {
      pushState: (s, t, u) => navigate(u),
      replaceState: (s, t, u) => navigate(u),
    },
    scrollY: 0,
    innerHeight: 800,
    localStorage: new FakeStorage(),
    sessionStorage: new FakeStorage(),
    CustomEvent: FakeCustomEvent,
    WebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    requestAnimationFrame: (fn) => clock.setTimeout(fn, 16),
    cancelAnimationFrame: clock.clearTimeout,
    clock,
    /** Change the address as back/forward would: no history call (the test fires popstate). */
    go: navigate,
  });
  return win;
}
