// What the visitor does, turned into built-in events (docs/protocol.md, "Built-in events"):
// page views (including single-page-app navigations), scroll depth, marked clicks, idle/active,
// the tab hidden and shown again, and exit intent.
// Capture only calls track(); it knows nothing of the socket.

const INPUTS = ['mousemove', 'keydown', 'pointerdown', 'scroll', 'touchstart', 'wheel'];
const MAX_TEXT = 512; // the server's limit for a string property

/** Properties of a `page_view` for the current location. */
export function pageProps(win, doc, referrer) {
  const l = win.location;
  return {
    path: clip(l.pathname),
    url: clip(l.href),
    title: clip(doc.title),
    referrer: clip(referrer),
  };
}

/**
 * How deep into the page the bottom of the viewport is, in percent (0–100). A page that fits
 * the viewport is seen whole: 100. Within 2 px of the end counts as the end, because zoomed
 * pages report fractional positions that never quite reach it.
 */
export function scrollDepth(scrollY, viewport, total) {
  const bottom = scrollY + viewport;
  if (bottom >= total - 2) return 100;
  return Math.max(0, Math.floor((bottom / total) * 100));
}

/**
 * Start capturing on `win`; returns {page(props), stop()}. page() records a page view by hand
 * (for apps whose navigations the history hooks do not see); stop() removes every listener and
 * timer and unwraps history.
 *
 * Options: track(name, props) receives the events; idleAfter (seconds, 0 = no idle events);
 * clickAll (report clicks on any element, not only [data-nudge-click]); visibility
 * (tab_hidden / tab_visible); exitIntent (exit_intent, desktop only); timers and now are
 * injectable for tests.
 */
export function startCapture({
  win,
  doc,
  track,
  idleAfter = 10,
  clickAll = false,
  visibility = true,
  exitIntent = true,
  timers = win,
  now = Date.now,
}) {
  const undo = [];
  const on = (target, type, fn, opts) => {
    target.addEventListener(type, fn, opts);
    undo.push(() => target.removeEventListener(type, fn, opts));
  };
  let running = true;

  // -- page views
  let page = null; // path + query of the page on screen; a change of hash alone is no new page
  let referrer = doc.referrer; // for SPA navigations, the previous address
  let navTimer = null;

  function view(extra, force) {
    const l = win.location;
    const key = l.pathname + l.search;
    if (key === page && !force) return;
    const props = pageProps(win, doc, referrer);
    page = key;
    referrer = l.href;
    depth = 0;
    exited = false;
    track('page_view', Object.assign(props, extra));
    measureSoon();
  }

  // Wrap pushState/replaceState: SPAs navigate through them and no event says so. The view is
  // recorded a tick later so that a title set right after the navigation is picked up.
  const history = win.history;
  const wrapped = [];
  for (const name of ['pushState', 'replaceState']) {
    const original = history && history[name];
    if (typeof original !== 'function') continue;
    const wrapper = function () {
      const result = original.apply(this, arguments);
      if (running && !navTimer) {
        navTimer = timers.setTimeout(() => {
          navTimer = null;
          view();
        }, 0);
      }
      return result;
    };
    history[name] = wrapper;
    wrapped.push([name, original, wrapper]);
  }
  on(win, 'popstate', () => view());

  // -- scroll depth, reported when the deepest point of this page crosses a new 10 % step
  let depth = 0; // deepest step reported for this page
  let frame = 0;
  const raf = win.requestAnimationFrame
    ? [(f) => win.requestAnimationFrame(f), (id) => win.cancelAnimationFrame(id)]
    : [(f) => timers.setTimeout(f, 100), (id) => timers.clearTimeout(id)];

  function measure() {
    frame = 0;
    const root = doc.documentElement;
    const total = Math.max(root.scrollHeight, doc.body ? doc.body.scrollHeight : 0);
    const y = win.scrollY || root.scrollTop || 0;
    const step = Math.floor(scrollDepth(y, win.innerHeight || root.clientHeight, total) / 10) * 10;
    if (step > depth) {
      depth = step;
      track('scroll', { depth: step });
    }
  }
  function measureSoon() {
    if (!frame) frame = raf[0](measure);
  }
  on(win, 'scroll', measureSoon, { passive: true });
  on(win, 'resize', measureSoon, { passive: true });
  on(win, 'load', measureSoon);

  // -- clicks on marked elements (or on anything, with clickAll)
  on(
    doc,
    'click',
    (e) => {
      const t = e.target;
      if (!t || !t.closest) return;
      let el = t.closest('[data-nudge-click]');
      let target = el && el.getAttribute('data-nudge-click');
      if (!el && clickAll) el = t.closest('a,button,[role=button],input') || t;
      // Nudge's own messages report shown/clicked/dismissed instead.
      if (!el || el.closest('nudge-message')) return;
      const text = (el.textContent || el.value || '').replace(/\s+/g, ' ').trim();
      track('click', { target: clip(target || el.tagName.toLowerCase()), text: clip(text, 80) });
    },
    true, // capture: a page handler that stops propagation must not hide the click
  );

  // -- idle / active. One timer checks how long ago the last input was, instead of restarting
  // a timer on every mousemove.
  let last = now();
  let idle = false;
  let idleTimer = null;
  const limit = idleAfter * 1000;

  function check() {
    idleTimer = null;
    const quiet = now() - last;
    if (quiet >= limit) {
      idle = true;
      track('idle', { after: idleAfter });
    } else {
      idleTimer = timers.setTimeout(check, limit - quiet);
    }
  }
  function input() {
    last = now();
    if (idle) {
      idle = false;
      track('active');
    }
    if (!idleTimer) idleTimer = timers.setTimeout(check, limit);
  }
  if (limit > 0) {
    for (const type of INPUTS) on(win, type, input, { capture: true, passive: true });
    idleTimer = timers.setTimeout(check, limit);
  }

  // -- the tab hidden, and shown again after `away` seconds. A page being left is hidden too,
  // after its pagehide: that is no visit to another tab, so it is not reported.
  let hiddenAt = null;
  let leaving = false;
  if (visibility) {
    on(win, 'pagehide', () => (leaving = true));
    on(win, 'pageshow', () => (leaving = false));
    on(doc, 'visibilitychange', () => {
      if (doc.visibilityState === 'hidden') {
        if (leaving || hiddenAt != null) return;
        hiddenAt = now();
        track('tab_hidden');
      } else if (hiddenAt != null) {
        track('tab_visible', { away: Math.round((now() - hiddenAt) / 1000) });
        hiddenAt = null;
      }
    });
  }

  // -- exit intent: the pointer leaves the window through its top edge (towards the tabs and the
  // address bar), at most once per page. Only where there is a mouse: touch has no such gesture.
  let exited = false;
  const mouse = !win.matchMedia || win.matchMedia('(pointer: fine)').matches;
  if (exitIntent && mouse) {
    on(doc, 'mouseout', (e) => {
      if (exited || e.relatedTarget || e.clientY > 0) return;
      exited = true;
      track('exit_intent');
    });
  }

  view();

  return {
    page(props) {
      if (running) view(props, true);
    },
    stop() {
      running = false;
      undo.forEach((f) => f());
      if (idleTimer) timers.clearTimeout(idleTimer);
      if (navTimer) timers.clearTimeout(navTimer);
      if (frame) raf[1](frame);
      idleTimer = navTimer = null;
      frame = 0;
      for (const [name, original, wrapper] of wrapped) {
        // Someone may have wrapped history after us; then our wrapper stays, inert.
        if (history[name] === wrapper) history[name] = original;
      }
    },
  };
}

/**
 * ``value`` as text of at most ``max`` UTF-16 units, cut between characters: a pair (an emoji,
 * say) straddling the limit goes whole, so no half of it (a lone surrogate) is ever sent.
 */
export function clip(value, max = MAX_TEXT) {
  const text = value == null ? '' : String(value);
  if (text.length <= max) return text;
  const last = text.charCodeAt(max - 1);
  return text.slice(0, last >= 0xd800 && last <= 0xdbff ? max - 1 : max);
}
