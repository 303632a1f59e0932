// Browser storage that never throws. Safari private mode, disabled cookies, sandboxed iframes
// and full quotas all make localStorage/sessionStorage throw; the snippet then keeps its state
// in memory for the life of the page instead of failing.

/** Every key the snippet stores, in one place. */
export const KEYS = {
  visitor: 'nudge:visitor', // localStorage: the visitor id, kept across sessions
  optOut: 'nudge:optout', // localStorage: '1' after nudge.optOut()
  session: 'nudge:session', // sessionStorage: the session id to resume
  rx: 'nudge:rx', // sessionStorage: highest `show` seq processed in that session
  seq: 'nudge:seq', // sessionStorage: seq of the last event created in that session
  outbox: 'nudge:outbox', // sessionStorage: JSON array of unacknowledged events {seq, name, props}
  seen: 'nudge:seen', // localStorage: JSON array of the latest message ids processed, in any tab
  trial: 'nudge:try', // localStorage: a test-device mark (t1.<expires>.<trial>.<signature>) until it expires
};

/**
 * The same store with every key under `nudge:try:` (a test device keeps a visitor, session and
 * outbox of its own, apart from the visitor this browser is otherwise).
 */
export function prefixed(store) {
  const k = (key) => 'nudge:try:' + key.slice('nudge:'.length);
  return {
    get: (key) => store.get(k(key)),
    set: (key, value) => store.set(k(key), value),
    remove: (key) => store.remove(k(key)),
  };
}

/**
 * A string store over `win[name]` ('localStorage' or 'sessionStorage'): get, set, remove.
 * A copy of every value is kept in memory so that a write failing halfway through the page
 * (quota) does not lose it; from then on the memory copy is the one read.
 */
export function openStore(win, name) {
  const memory = new Map();
  let area = null;
  try {
    area = win[name];
    area.setItem('nudge:probe', '1');
    area.removeItem('nudge:probe');
  } catch (e) {
    area = null;
  }
  return {
    get(key) {
      if (area) {
        try {
          return area.getItem(key);
        } catch (e) {
          area = null;
        }
      }
      return memory.has(key) ? memory.get(key) : null;
    },
    set(key, value) {
      memory.set(key, String(value));
      if (area) {
        try {
          area.setItem(key, String(value));
        } catch (e) {
          area = null;
        }
      }
    },
    remove(key) {
      memory.delete(key);
      if (area) {
        try {
          area.removeItem(key);
        } catch (e) {
          area = null;
        }
      }
    },
  };
}

/** A store that keeps everything in memory for the life of the page (`storage: 'memory'`). */
export function memoryStore() {
  return openStore({}, 'none');
}

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-';

/** A random id: `prefix` + 22 characters of [A-Za-z0-9_-] (132 bits). */
export function randomId(prefix, crypto = globalThis.crypto) {
  const bytes = new Uint8Array(22);
  if (crypto && crypto.getRandomValues) crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.random() * 256;
  let id = prefix;
  for (const b of bytes) id += ALPHABET[b & 63];
  return id;
}

/** Whether `id` is a visitor id the server accepts (8–64 chars of [A-Za-z0-9_-]). */
export function isVisitorId(id) {
  return typeof id === 'string' && /^[A-Za-z0-9_-]{8,64}$/.test(id);
}
