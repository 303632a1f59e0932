// In-app messages on screen. Each message gets its own <nudge-message> host with an open shadow
// root holding its stylesheet, so the page's CSS cannot break it and its CSS cannot leak out;
// the page themes it through CSS variables set on the host:
//
//   nudge-message { --nudge-accent: #0a7; --nudge-radius: 4px; }
//
// Server text is plain text (docs/protocol.md, "show"): it only ever goes into textContent.
// Rendering reports through callbacks; it never touches the socket.

const KINDS = ['modal', 'banner', 'toast', 'slidein'];

// Declarations on :host are !important: the page's own !important rules on the host element
// (`* {display: none !important}`, say) would win otherwise, and an inner !important beats an
// outer one. Inside the shadow root nothing of the page applies but inherited values, which
// `all: initial` cuts off.
const CSS = `:host{all:initial!important;position:fixed!important;display:block!important;z-index:2147483000!important;visibility:visible!important;opacity:1!important;color:var(--nudge-fg,#1d2330)!important;font:15px/1.45 var(--nudge-font,system-ui,-apple-system,"Segoe UI",Roboto,sans-serif)!important}
:host([data-kind=modal]){top:0!important;right:0!important;bottom:0!important;left:0!important;display:flex!important;align-items:center!important;justify-content:center!important;padding:16px!important}
:host([data-kind=banner]){left:0!important;right:0!important;top:0!important}
:host([data-position=bottom]){top:auto!important;bottom:0!important}
:host([data-kind=toast]){left:50%!important;bottom:16px!important;transform:translateX(-50%)!important;width:min(380px,calc(100vw - 32px))!important}
:host([data-kind=slidein]){right:16px!important;bottom:16px!important;width:min(340px,calc(100vw - 32px))!important}
.backdrop{position:fixed;top:0;right:0;bottom:0;left:0;background:rgba(12,16,24,.5);animation:fade .2s}
.box{position:relative;box-sizing:border-box;background:var(--nudge-bg,#fff);border-radius:var(--nudge-radius,12px);padding:20px 22px;box-shadow:0 12px 32px rgba(0,0,0,.22);animation:rise .25s ease-out}
:host([data-kind=modal]) .box{width:min(440px,100%)}
:host([data-kind=banner]) .box{border-radius:0;display:flex;flex-wrap:wrap;align-items:center;justify-content:center;gap:6px 16px;padding:12px 52px 12px 20px}
.nudge-title{display:block;margin:0 0 6px;padding-right:28px;font-size:1.15em;font-weight:650}
.nudge-body{margin:0 0 14px}
:host([data-kind=banner]) .nudge-title,:host([data-kind=banner]) .nudge-body{margin:0;padding:0;font-size:1em}
.nudge-actions{display:flex;flex-wrap:wrap;justify-content:flex-end;gap:8px}
button{font:inherit;color:inherit;cursor:pointer;border:1px solid rgba(128,128,128,.45);background:none;border-radius:calc(var(--nudge-radius,12px) * .6);padding:7px 14px}
.nudge-cta{background:var(--nudge-accent,#2563eb);border-color:transparent;color:var(--nudge-accent-fg,#fff);font-weight:600}
.box>.nudge-dismiss{position:absolute;top:6px;right:6px;border:0;padding:2px 10px;font-size:22px;line-height:1.2}
button:focus-visible{outline:2px solid var(--nudge-accent,#2563eb);outline-offset:2px}
.nudge-more{display:none}
@media (max-width:480px){:host([data-kind=slidein]),:host([data-kind=toast]){left:0!important;right:0!important;bottom:0!important;width:auto!important;transform:none!important}
:host([data-kind=slidein]) .box,:host([data-kind=toast]) .box{display:flex;flex-wrap:wrap;align-items:center;gap:4px 10px;border-radius:var(--nudge-radius,12px) var(--nudge-radius,12px) 0 0;padding:10px 14px max(10px,env(safe-area-inset-bottom))}
.box .nudge-title{flex:1 1 0;margin:0;font-size:1em}
.box .nudge-body{flex:1 1 100%;order:1;margin:0;display:-webkit-box;-webkit-box-orient:vertical;-webkit-line-clamp:2;overflow:hidden}
.box .nudge-title~.nudge-body{position:absolute;width:1px;height:1px;overflow:hidden;clip-path:inset(50%)}
.box.open .nudge-body{position:static;width:auto;height:auto;clip-path:none;display:block;max-height:40vh;overflow:auto}
.box .nudge-actions{margin-left:auto;flex-wrap:nowrap}
.box .nudge-more{display:inline-block}
.box>.nudge-dismiss{position:static;order:0}}
@keyframes rise{from{opacity:0;transform:translateY(12px)}}
@keyframes fade{from{opacity:0}}
@media (prefers-reduced-motion:reduce){.box,.backdrop{animation:none}}`;

/**
 * The campaign's theme as [name, value] pairs safe to set on the host: only `--nudge-*`
 * variables, and only values that cannot fetch anything or end the declaration (no `url(`,
 * `image(`, `image-set(`, `;{}\\<`; at most 200 characters).
 */
export function themeVars(theme) {
  const out = [];
  if (!theme || typeof theme !== 'object') return out;
  for (const name of Object.keys(theme)) {
    const value = String(theme[name]);
    if (/^--nudge-[a-z0-9-]+$/.test(name) && value.length <= 200 && !/url\(|image(-set)?\(|[;{}\\<]/i.test(value)) {
      out.push([name, value]);
    }
  }
  return out;
}

/**
 * `url` resolved against `base` if it is an absolute http: or https: URL, or a relative one that
 * stays on `base`'s origin; otherwise null. A URL parser drops tabs and newlines, trims spaces
 * and reads `\` as `/`, so `/\t/evil`, `/\evil` and ` //evil` are all `//evil`, another host:
 * such characters are refused outright, and a relative url must resolve to this origin.
 */
export function safeUrl(url, base) {
  if (typeof url !== 'string' || !url || /[\u0000-\u0020\u007f\\]/.test(url)) return null;
  try {
    const u = new URL(url, base);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return null;
    if (/^https?:\/\//i.test(url)) return u.href; // where the campaign says
    return u.origin === new URL(base).origin ? u.href : null;
  } catch (e) {
    return null;
  }
}

/**
 * A renderer for `show` records: {show(msg), destroy()}.
 *
 * onShown(msg) runs when a message becomes visible, onClick(msg) when its call to action is
 * pressed (before navigating), onDismiss(msg) when the visitor closes it. A toast that times
 * out reports nothing. Only one modal is on screen at a time; later ones wait their turn.
 */
export function createRenderer({
  win,
  doc,
  onShown,
  onClick,
  onDismiss,
  timers = win,
  navigate = (url) => win.location.assign(url),
  toastMs = 8000,
}) {
  const closers = new Set(); // close() of every message on screen
  const waiting = []; // modals queued behind the one on screen
  let modalOpen = false;
  let destroyed = false;

  function show(msg) {
    if (destroyed) return;
    const kind = KINDS.indexOf(msg.kind) >= 0 ? msg.kind : 'toast';
    if (kind === 'modal' && modalOpen) waiting.push(msg);
    else mount(msg, kind);
  }

  function mount(msg, kind) {
    const el = (tag, cls, text) => {
      const e = doc.createElement(tag);
      if (cls) e.className = cls;
      if (text != null) e.textContent = String(text);
      return e;
    };
    const host = el('nudge-message');
    host.setAttribute('data-campaign', msg.campaign == null ? '' : String(msg.campaign));
    host.setAttribute('data-kind', kind);
    host.setAttribute('data-seq', String(msg.seq));
    if (kind === 'banner') host.setAttribute('data-position', msg.position === 'bottom' ? 'bottom' : 'top');
    // Inline on the host: a campaign's theme wins over the page's `nudge-message {…}` defaults.
    for (const [name, value] of themeVars(msg.theme)) host.style.setProperty(name, value);
    const root = host.attachShadow({ mode: 'open' });
    root.appendChild(el('style', null, CSS));
    const backdrop = kind === 'modal' ? root.appendChild(el('div', 'backdrop')) : null;
    const box = root.appendChild(el('div', 'box'));
    box.setAttribute('part', 'box');

    if (msg.title) {
      const title = box.appendChild(el(kind === 'modal' || kind === 'slidein' ? 'h2' : 'strong', 'nudge-title', msg.title));
      title.id = 'nudge-title';
      box.setAttribute('aria-labelledby', 'nudge-title');
    } else {
      box.setAttribute('aria-label', 'Message');
    }
    if (msg.body) {
      box.appendChild(el('p', 'nudge-body', msg.body)).id = 'nudge-body';
      box.setAttribute('aria-describedby', 'nudge-body');
    }
    const actions = box.appendChild(el('div', 'nudge-actions'));
    // Narrow screens show slide-ins and toasts as a one-line sheet at the bottom, clear of the
    // page's content; the body (still read out: it is clipped, not removed) opens with "More".
    if (msg.body && (kind === 'slidein' || kind === 'toast')) {
      const more = actions.appendChild(el('button', 'nudge-more', 'More'));
      more.type = 'button';
      more.setAttribute('aria-expanded', 'false');
      more.addEventListener('click', () => {
        more.setAttribute('aria-expanded', String(box.classList.toggle('open')));
      });
    }
    const cta = msg.cta && msg.cta.label ? actions.appendChild(el('button', 'nudge-cta', msg.cta.label)) : null;
    const url = cta && safeUrl(msg.cta.url, win.location.href);
    // A worded dismiss ("Not now") sits next to the call to action; a bare × in the corner.
    const dismiss = (msg.dismiss ? actions : box).appendChild(el('button', 'nudge-dismiss', msg.dismiss || '\u00d7'));
    // Only the bare × needs a spoken name; a worded button is announced by its own words.
    if (!msg.dismiss) dismiss.setAttribute('aria-label', 'Close');
    const buttons = cta ? [cta, dismiss] : [dismiss];
    for (const b of buttons) b.type = 'button';

    if (kind === 'modal') {
      box.setAttribute('role', 'dialog');
      box.setAttribute('aria-modal', 'true');
    } else if (kind === 'slidein') {
      box.setAttribute('role', 'dialog');
    } else if (kind === 'banner' && msg.title) {
      box.setAttribute('role', 'region');
    } else {
      box.setAttribute('role', 'status');
      box.setAttribute('aria-live', 'polite');
    }

    let closed = false;
    let timer = null;
    let restore = null; // element focused before a modal took the focus
    const keepFocus = (e) => {
      if (e.target !== host) buttons[0].focus();
    };

    function close() {
      if (closed) return;
      closed = true;
      closers.delete(close);
      if (timer) timers.clearTimeout(timer);
      host.remove();
      if (kind !== 'modal') return;
      doc.removeEventListener('focusin', keepFocus, true);
      modalOpen = false;
      if (restore && restore.focus && restore.isConnected) restore.focus();
      if (waiting.length && !destroyed) mount(waiting.shift(), 'modal');
    }
    function dismissed() {
      close();
      onDismiss(msg);
    }
    closers.add(close);

    if (cta) {
      cta.addEventListener('click', () => {
        onClick(msg); // first: the event is stored before the page goes away
        close();
        if (url) navigate(url);
      });
    }
    dismiss.addEventListener('click', dismissed);
    // Escape closes any kind while focus is in it (a modal always has the focus).
    root.addEventListener('keydown', (e) => {
      if (e.key === 'Escape') {
        e.preventDefault();
        dismissed();
      }
    });

    if (kind === 'modal') {
      modalOpen = true;
      restore = doc.activeElement;
      backdrop.addEventListener('click', dismissed);
      root.addEventListener('keydown', (e) => {
        if (e.key === 'Tab') {
          // The buttons are the only focusable elements: cycle through them.
          e.preventDefault();
          const i = buttons.indexOf(root.activeElement) + (e.shiftKey ? -1 : 1);
          buttons[(i + buttons.length) % buttons.length].focus();
        }
      });
      doc.addEventListener('focusin', keepFocus, true);
    }

    if (kind === 'toast') {
      // Stays while the pointer is over it or focus is in it; the countdown restarts after.
      let hovered = false;
      let focused = false;
      const update = () => {
        if (timer) timers.clearTimeout(timer);
        timer = hovered || focused ? null : timers.setTimeout(close, toastMs);
      };
      host.addEventListener('mouseenter', () => update((hovered = true)));
      host.addEventListener('mouseleave', () => update((hovered = false)));
      host.addEventListener('focusin', () => update((focused = true)));
      host.addEventListener('focusout', () => update((focused = false)));
      update();
    }

    (doc.body || doc.documentElement).appendChild(host);
    // In the top layer (a manual popover) the message is above anything the page stacks, and no
    // transform, filter or opacity of the page's elements applies to it. Older browsers: z-index.
    if (host.showPopover) {
      try {
        host.setAttribute('popover', 'manual');
        host.showPopover();
      } catch (e) {
        host.removeAttribute('popover');
      }
    }
    if (kind === 'modal') buttons[0].focus();
    onShown(msg);
  }

  return {
    show,
    /** Remove every message and timer (nudge.shutdown()). */
    destroy() {
      destroyed = true;
      waiting.length = 0;
      for (const close of Array.from(closers)) close();
    },
  };
}
