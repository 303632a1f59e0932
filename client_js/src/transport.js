import { backoff } from './backoff.js';
import { CODECS, byteLength, pick } from './codec.js';
import { Close, FATAL, MAX_BATCH, MAX_FRAME, MAX_RETRY_HINT, State, VERSION } from './codes.js';
import { KEYS, isVisitorId, randomId } from './storage.js';

const OPEN = 1; // WebSocket.OPEN
const noop = () => {};
const SEEN_LIMIT = 50; // message ids remembered as processed (a message waits in the queue a day at most)

/**
 * The snippet's connection to the server (docs/protocol.md): one WebSocket, the hello/welcome
 * handshake, numbered events kept in an outbox until the server acknowledges them, `show`
 * messages deduplicated by seq, a keep-alive ping and reconnection with full-jitter backoff.
 *
 * Events tracked in one go (in the same task, and the microtasks after it) leave in one frame:
 * an `evs` frame when there are several, an `ev` for one; so do the events waiting for a socket
 * that is not open yet, once `welcome` says which of them the server still needs. The server
 * acknowledges a batch with one cumulative `ack` and names any event it refused in an `error`,
 * exactly as for single events.
 *
 * It never touches the DOM: events come in through send(), messages leave through onShow, and
 * every state change goes through _setState() to onState. What a page navigation must not lose
 * (session id, rx, last seq, outbox) is written to the session store as soon as it changes, so
 * the next page of the tab resumes the same session and resends what was not acknowledged.
 */
export class Transport {
  /**
   * @param {object} o
   * @param {string} o.url  the ws:// or wss:// address of `/ws`
   * @param {string} o.key  the site's publishable key
   * @param {{get, set, remove}} o.local  store kept across sessions (localStorage)
   * @param {{get, set, remove}} o.session  store kept for the tab (sessionStorage)
   * @param {Function} [o.WebSocket]  WebSocket constructor; tests pass a fake
   * @param {{setTimeout, clearTimeout}} [o.timers]  tests pass a fake clock
   * @param {(fn: Function) => void} [o.defer]  runs `fn` once the current task's script is done
   *   (a microtask); tests pass their own
   * @param {(msg: object) => void} [o.onShow]  called once per new `show` record
   * @param {(state: string) => void} [o.onState]  called on each state change
   */
  constructor(o) {
    this.url = o.url; // where to connect
    this.key = o.key; // sent in hello
    this.state = State.CLOSED; // one of State; only _setState() changes it
    this._WebSocket = o.WebSocket || globalThis.WebSocket; // injected so tests run in Node
    this._codecs = o.codecs || CODECS; // offered to the server in this order
    this._codec = this._codecs[0]; // the codec of the current socket
    this._timers = o.timers || globalThis; // setTimeout / clearTimeout
    this._defer = o.defer || ((fn) => Promise.resolve().then(fn)); // the end of this task's script
    this._random = o.random || Math.random; // jitter source for backoff
    this._onShow = o.onShow || noop; // receives each `show` not seen before
    this._onState = o.onState || noop; // receives each new state
    this._trial = o.trial || null; // a test-device mark, sent in hello
    this._onTrialEnded = o.onTrialEnded || noop; // the server refused the mark (4410)
    this._warn = o.warn || ((...a) => console.warn('[nudge]', ...a));
    this._local = o.local; // visitor id
    this._store = o.session; // session id, rx, seq, outbox
    this._limit = o.bufferLimit || 500; // outbox length; the oldest events go first
    this._minDelay = o.minDelay || 500; // backoff base, ms
    this._maxDelay = o.maxDelay || 30000; // backoff cap, ms
    this._pingEvery = o.pingInterval || 25000; // ms between pings on an open socket
    this._deadAfter = o.deadAfter || 10000; // ms of silence after a ping, or for the handshake
    this._ws = null; // the current socket; null between attempts
    this._step = 0; // reconnect attempts since the last welcome
    this._timer = {}; // pending timers by name: reconnect, ping, dead
    this._warned = {}; // error codes already reported on the console
    this._stopped = false; // after shutdown() or a fatal close code: never reconnect
    this._written = 0; // highest event seq written on the current socket
    this._lastFrame = []; // seqs of the last event frame written: 1009 refers to it
    this._flushing = false; // a write of new events is deferred to the end of this task
    this._single = false; // one event per frame: a batch was refused as too large (1009)

    const s = this._store;
    this._session = s.get(KEYS.session) || undefined; // session to resume
    this._rx = Number(s.get(KEYS.rx)) || 0; // highest show seq processed
    this._outbox = readOutbox(s.get(KEYS.outbox)); // events not yet acknowledged, by seq
    const last = this._outbox.length ? this._outbox[this._outbox.length - 1].seq : 0;
    this._seq = Math.max(Number(s.get(KEYS.seq)) || 0, last); // seq of the last event created
    let visitor = this._local.get(KEYS.visitor);
    if (!isVisitorId(visitor)) this._local.set(KEYS.visitor, (visitor = randomId('v_')));
    this._visitor = visitor; // sent in hello
  }

  /** The visitor id this tab sends in hello (the server's, once it welcomed another). */
  get visitor() {
    return this._visitor;
  }

  /** Connect, unless already connected, waiting to reconnect, or stopped. */
  start() {
    if (!this._stopped && !this._ws && !this._timer.reconnect) this._connect();
  }

  /**
   * Queue event `name` with `props` and send it if the socket is ready. Returns its seq, or 0
   * when it was refused (stopped, not serialisable, or larger than a frame may be).
   */
  send(name, props) {
    if (this._stopped) return 0;
    const ev = { seq: this._seq + 1, name: String(name), props: {} };
    let size;
    try {
      // A copy: the caller may change the object later, and a resend must send what happened.
      if (props != null) ev.props = JSON.parse(JSON.stringify(props));
      size = byteLength(this._codec.encode(frame(ev)));
    } catch (e) {
      this._warn('event not sent, props are not serialisable:', name, e);
      return 0;
    }
    if (size > MAX_FRAME) {
      this._warn('event not sent, larger than', MAX_FRAME, 'bytes:', name);
      return 0;
    }
    this._seq = ev.seq;
    this._outbox.push(ev);
    if (this._outbox.length > this._limit) this._outbox.splice(0, this._outbox.length - this._limit);
    this._save();
    if (this.state === State.OPEN && !this._flushing) {
      // Whatever else is tracked before this task's script ends goes in the same frame.
      this._flushing = true;
      this._defer(() => {
        this._flushing = false;
        if (this.state === State.OPEN) this._sendEvents(this._outbox.filter((e) => e.seq > this._written));
      });
    }
    return ev.seq;
  }

  /**
   * The network is back ('online'), or the page came back from the back/forward cache: connect
   * now instead of waiting for the backoff timer. An open socket may not have noticed the
   * network change, so it is probed with a ping instead.
   */
  reconnectNow() {
    if (this._stopped) return;
    if (this._ws) {
      if (this.state === State.OPEN) this._ping();
      return;
    }
    this._clear('reconnect');
    this._connect();
  }

  /**
   * Close the socket without reconnecting, keeping everything stored (the page is being hidden:
   * an open socket keeps it out of the back/forward cache). reconnectNow() resumes.
   */
  suspend() {
    this._clearAll();
    this._detach();
    this._setState(State.CLOSED);
  }

  /**
   * The last flush of a page being hidden: the body of a POST /beacon (JSON) that lets the
   * server apply the unacknowledged events over HTTP, or null when there is nothing to send or
   * no session yet. Nothing is dropped here: the server applies each seq once, whichever way it
   * arrives, and the next page learns from `welcome.ack` what it no longer has to resend.
   * Browsers refuse beacons over 64 KB, so a long outbox is cut to its oldest events (a prefix:
   * a gap in the seqs would make the server take the events after it as resends).
   */
  beacon(limit = 60000) {
    if (!this._session || !this._outbox.length || this._stopped) return null;
    let events = this._outbox.map(frame);
    for (;;) {
      const body = JSON.stringify({ key: this.key, visitor: this._visitor, session: this._session, events });
      if (byteLength(body) <= limit) return body;
      if (events.length < 2) return null;
      events = events.slice(0, events.length >> 1);
    }
  }

  /** Close the socket and clear every timer for good. Stored state stays for the next page. */
  shutdown() {
    this._stopped = true;
    this.suspend();
  }

  // -- connection lifecycle

  _connect() {
    this._clear('reconnect');
    this._setState(State.CONNECTING);
    let ws;
    try {
      ws = new this._WebSocket(
        this.url,
        this._codecs.map((c) => c.subprotocol),
      );
    } catch (e) {
      // A malformed URL: retrying cannot help.
      this._warn('cannot connect to', this.url, e);
      return this._fail();
    }
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => this._hello(ws);
    ws.onmessage = (e) => this._receive(ws, e.data);
    ws.onclose = (e) => this._closed(ws, e.code, e.reason);
    ws.onerror = noop; // a close event always follows
    this._ws = ws;
    // Opening and the handshake together get the same time as an unanswered ping.
    this._arm('dead', this._deadAfter, () => this._dead());
  }

  _hello(ws) {
    if (ws !== this._ws) return;
    this._codec = pick(this._codecs, ws.protocol);
    const hello = { t: 'hello', v: VERSION, key: this.key, visitor: this._visitor };
    if (this._trial) hello.try = this._trial;
    if (this._session) {
      hello.session = this._session;
      hello.rx = this._rx;
    }
    this._write(hello);
  }

  _receive(ws, data) {
    if (ws !== this._ws) return;
    let m = null;
    try {
      m = this._codec.decode(data);
    } catch (e) {
      // fall through: reported below
    }
    if (!m || typeof m !== 'object') return this._warnOnce('frame', 'unreadable frame from server');
    // Any frame proves an open connection alive. During the handshake only welcome does.
    if (this.state === State.OPEN) this._clear('dead');
    switch (m.t) {
      case 'welcome':
        return this._welcome(m);
      case 'ack':
        return this._acked(Number(m.seq) || 0);
      case 'show':
        return this._show(m);
      case 'error':
        return this._error(m);
      case 'ping':
        // A server that probes with a frame of its own (browsers answer WebSocket-level pings
        // by themselves, but script cannot see those) gets the answer it would send us.
        return this._write({ t: 'pong' });
      // 'pong' needs nothing more: its whole purpose was clearing the dead timer above.
    }
  }

  _welcome(m) {
    if (this.state !== State.CONNECTING) return this._warnOnce('welcome', 'unexpected welcome');
    this._clear('dead');
    if (m.session) this._session = String(m.session);
    if (isVisitorId(m.visitor) && m.visitor !== this._visitor) {
      this._visitor = m.visitor;
      this._local.set(KEYS.visitor, m.visitor);
    }
    if (m.resumed) {
      this._drop(Number(m.ack) || 0);
    } else {
      // A new session numbers both directions from 1 again: what was processed of the old one
      // means nothing to it, and the events it never applied are renumbered 1, 2, 3…
      this._rx = 0;
      this._outbox.forEach((ev, i) => (ev.seq = i + 1));
      this._seq = this._outbox.length;
    }
    this._save();
    this._step = 0;
    // Resend before announcing the state: a listener that tracks an event on 'open' must not
    // get a seq onto the wire ahead of older ones (the server would take those as resends).
    this._written = 0;
    this._lastFrame = [];
    this._sendEvents(this._outbox);
    this._setState(State.OPEN);
    this._schedulePing();
  }

  _acked(seq) {
    this._drop(seq);
    this._save();
  }

  _show(m) {
    const seq = Number(m.seq) || 0;
    if (seq <= this._rx) {
      // Already processed (a resend after a reconnect): acknowledge again, show nothing.
      this._write({ t: 'ack', seq: this._rx });
      return;
    }
    this._rx = seq;
    this._store.set(KEYS.rx, seq);
    this._write({ t: 'ack', seq });
    // A message the visitor's queue kept until acknowledged may come again under a new seq (its
    // node died before the ack; another tab attached first): processed once per id, in any tab.
    if (m.id != null && !this._firstSight(String(m.id))) return;
    try {
      this._onShow(m);
    } catch (e) {
      this._warn('message handler failed', e);
    }
  }

  /** Remember a message id as processed; false when it was already (this tab or another). */
  _firstSight(id) {
    let seen;
    try {
      seen = JSON.parse(this._local.get(KEYS.seen) || '[]');
      if (!Array.isArray(seen)) seen = [];
    } catch (e) {
      seen = [];
    }
    if (seen.indexOf(id) >= 0) return false;
    seen.push(id);
    this._local.set(KEYS.seen, JSON.stringify(seen.slice(-SEEN_LIMIT)));
    return true;
  }

  _error(m) {
    this._warnOnce(m.code, 'server refused:', m.code, m.reason || '');
    if (m.seq != null) {
      // That event counts as acknowledged: resending it would fail the same way.
      const seq = Number(m.seq);
      this._outbox = this._outbox.filter((ev) => ev.seq !== seq);
      this._save();
    }
  }

  _closed(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._clear('ping');
    this._clear('dead');
    if (FATAL.indexOf(code) >= 0) return this._fail(code);
    if (code === Close.MARK_REFUSED && this._trial) {
      this._stopped = true;
      this._clearAll();
      this._setState(State.CLOSED);
      return this._onTrialEnded();
    }
    if (code === Close.TOO_LARGE) {
      // The snippet never writes a frame over MAX_FRAME, so the server's limit is lower. A frame
      // of one event: that event is the one it refused, and resending it would loop. A batch:
      // which of its events is too large cannot be told, so from now on each goes in a frame of
      // its own, and the next 1009 names it.
      const last = this._lastFrame;
      if (last.length === 1) {
        this._outbox = this._outbox.filter((ev) => ev.seq !== last[0]);
        this._save();
      } else if (last.length > 1) {
        this._single = true;
      }
    }
    // Rate limited: start a few steps up the backoff curve, not at its fast bottom.
    if (code === Close.RATE_LIMITED || code === Close.TOO_MANY) this._step = Math.max(this._step, 3);
    // A server restarting says when to come back (a delay it drew at random for this socket, so
    // that its visitors do not all reconnect in the same second): honour it, capped.
    const hint = /retry=(\d+)/.exec(reason || '');
    this._retry(hint ? Math.min(Number(hint[1]), MAX_RETRY_HINT) : undefined);
  }

  /** No frame in time: a closing handshake would wait on the dead peer too, so just leave it. */
  _dead() {
    this._detach();
    this._retry();
  }

  _retry(hinted) {
    this._setState(State.CLOSED);
    const delay = hinted != null ? hinted : backoff(this._step++, this._minDelay, this._maxDelay, this._random);
    this._arm('reconnect', delay, () => this._connect());
  }

  _fail(code) {
    this._stopped = true;
    this._clearAll();
    this._detach();
    if (code) this._warn('connection refused for good, close code', code);
    this._setState(State.FAILED);
  }

  /** Forget the current socket: later events from it are ignored, then close it. */
  _detach() {
    const ws = this._ws;
    this._ws = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(Close.NORMAL);
    } catch (e) {
      // already closed
    }
  }

  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    this._onState(state);
  }

  // -- frames

  _write(record) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(this._codec.encode(record));
      return true;
    } catch (e) {
      return false; // the close event that follows takes it from here
    }
  }

  /**
   * Write `events` (in seq order, none written on this socket yet): one `ev` frame for a single
   * event, else `evs` frames of at most MAX_BATCH events and MAX_FRAME bytes.
   */
  _sendEvents(events) {
    let i = 0;
    while (i < events.length) {
      const batch = [events[i]];
      let size = 32 + this._size(events[i]); // an evs frame's own fields, then each event's
      for (i++; i < events.length && !this._single && batch.length < MAX_BATCH; i++) {
        size += this._size(events[i]);
        if (size > MAX_FRAME) break;
        batch.push(events[i]);
      }
      const record = batch.length === 1 ? frame(batch[0]) : { t: 'evs', events: batch.map(item) };
      if (!this._write(record)) return;
      this._written = batch[batch.length - 1].seq;
      this._lastFrame = batch.map((ev) => ev.seq);
    }
  }

  /** Bytes of `ev` in its own frame: more than it takes in a batch. */
  _size(ev) {
    try {
      return byteLength(this._codec.encode(frame(ev)));
    } catch (e) {
      return MAX_FRAME; // cannot happen (checked in send); alone in its frame if it did
    }
  }

  _schedulePing() {
    this._arm('ping', this._pingEvery, () => {
      this._ping();
      this._schedulePing();
    });
  }

  _ping() {
    this._write({ t: 'ping' });
    if (!this._timer.dead) this._arm('dead', this._deadAfter, () => this._dead());
  }

  _drop(ack) {
    this._outbox = this._outbox.filter((ev) => ev.seq > ack);
  }

  _save() {
    const s = this._store;
    if (this._session) s.set(KEYS.session, this._session);
    s.set(KEYS.rx, this._rx);
    s.set(KEYS.seq, this._seq);
    s.set(KEYS.outbox, JSON.stringify(this._outbox));
  }

  _warnOnce(key, ...args) {
    if (this._warned[key]) return;
    this._warned[key] = true;
    this._warn(...args);
  }

  // -- timers

  _arm(name, ms, fn) {
    this._clear(name);
    this._timer[name] = this._timers.setTimeout(() => {
      this._timer[name] = null;
      fn();
    }, ms);
  }

  _clear(name) {
    if (this._timer[name]) this._timers.clearTimeout(this._timer[name]);
    this._timer[name] = null;
  }

  _clearAll() {
    for (const name in this._timer) this._clear(name);
  }
}

function frame(ev) {
  return { t: 'ev', seq: ev.seq, name: ev.name, props: ev.props };
}

/** An event in an `evs` frame: an `ev` without its `t`. */
function item(ev) {
  return { seq: ev.seq, name: ev.name, props: ev.props };
}

function readOutbox(text) {
  try {
    const list = JSON.parse(text);
    if (Array.isArray(list)) {
      return list.filter((ev) => ev && ev.seq > 0 && typeof ev.name === 'string');
    }
  } catch (e) {
    // missing or damaged: start empty
  }
  return [];
}
