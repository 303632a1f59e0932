"""The snippet as a customer's page runs it: Debian's chromium driven by Playwright, the built
nudge.js loaded from a real server whose clock the test moves.

The customer's pages come from a little static server of their own on another port of 127.0.0.1
(another origin) and load ``nudge.js`` from the Nudge server, as a site embedding a self-hosted
Nudge would: the socket and the beacon go cross-origin, with the page's origin checked against
the site key. Chromium talks only to 127.0.0.1; a dead proxy catches anything else.

Nothing here sleeps to synchronise: the tests await conditions in the page
(``wait_for_function``), poll server state with a bound (``eventually``), or move the server's
fake clock.
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import nudge.ops.app
import pytest
import uvicorn
from nudge.ops.app import create_app, server_config
from nudge.rules.campaigns import load_text
from nudge.runtime.clock import FakeClock
from nudge.runtime.config import Settings
from nudge.store.memory import MemoryStore

from ..conftest import KEY, WAIT, current_layer, eventually

pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("socket_layer")]  # on each socket layer

MS = WAIT * 1000  # Playwright counts in milliseconds
BACKEND_KEY = "sk_test_shop_backend"  # the shop's backend, for POST /api/events

# The loader as the README tells sites to paste it, pointed at the test server.
LOADER = """!function(w,d){if(w.nudge)return;var n=w.nudge=function(){n.q.push(arguments)};n.q=[];
["init","track","identify","page","optOut","shutdown","onMessage","visitorId"].forEach(function(m){n[m]=function(){n.q.push([m].concat([].slice.call(arguments)))}});
var s=d.createElement("script");s.async=1;s.src="%s/nudge.js";d.head.appendChild(s)}(window,document);"""

# Runs before any page script: counts what leaves the page and what executes that should not.
WATCH = """
window.__xss = 0;
window.hit = function () { window.__xss++; };
window.__sockets = 0;
window.__beacons = [];
window.__messages = [];
addEventListener('nudge:message', function (e) { window.__messages.push(e.detail.campaign + '#' + e.detail.seq); });
(function () {
  var WS = window.WebSocket;
  window.WebSocket = function (url, protocols) { window.__sockets++; return new WS(url, protocols); };
  window.WebSocket.prototype = WS.prototype;
  window.WebSocket.OPEN = 1;
  // With window.__blackhole set, events written to the socket (ev and evs frames) never reach
  // the server: they stay unacknowledged, as on a connection that died without the snippet
  // noticing yet. window.__frames counts the event frames written, by type.
  window.__frames = {ev: 0, evs: 0};
  var send = WS.prototype.send;
  WS.prototype.send = function (data) {
    var kind = typeof data !== 'string' ? null
      : data.lastIndexOf('{"t":"evs"', 0) === 0 ? 'evs' : data.lastIndexOf('{"t":"ev"', 0) === 0 ? 'ev' : null;
    if (kind) window.__frames[kind]++;
    if (window.__blackhole && kind) return;
    return send.call(this, data);
  };
  var beacon = navigator.sendBeacon.bind(navigator);
  navigator.sendBeacon = function (url, body) { window.__beacons.push(String(url)); return beacon(url, body); };
})();
"""


def campaigns_yaml(*campaigns: dict, events: tuple[str, ...] = ()) -> str:
    """A campaign file (JSON is YAML) for ``load_text``."""
    return json.dumps({"version": 1, "events": list(events), "campaigns": list(campaigns)})


def on_event(cid: str, event: str, message: dict, **extra) -> dict:
    return {"id": cid, "trigger": {"event": event}, "message": message, **extra}


class Shop:
    """The customer's site: static pages on their own port of 127.0.0.1, in a thread."""

    def __init__(self) -> None:
        pages = self.pages = {}  # path -> HTML

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                page = pages.get(self.path.split("?")[0])
                if page is None and self.path == "/favicon.ico":
                    page = ""  # not a console error in every test
                body = page.encode() if page is not None else b""
                self.send_response(200 if page is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class Server:
    """A real server on 127.0.0.1 that a test can stop and start again on the same port, keeping
    its store and clock (a restart, as an operator would do one). ``shop`` is the site's URL."""

    def __init__(self, campaigns: str, monkeypatch: pytest.MonkeyPatch, shop: Shop) -> None:
        self.shop = shop.url
        self.pages = shop.pages
        self.campaign_set = load_text(campaigns, "test.yaml")
        self.clock = FakeClock()
        self.store = MemoryStore()
        self.port = 0
        self.hub = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None
        # The restarted app must open the same store: what a Redis URL would give it.
        monkeypatch.setattr(nudge.ops.app, "open_store", lambda url, **options: self.store)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        settings = Settings(host="127.0.0.1", port=self.port, site_keys=[KEY], origins=[self.shop], secret_keys=[BACKEND_KEY],
                            ws_server=current_layer())
        app = create_app(settings, clock=self.clock, campaign_set=self.campaign_set)
        # As ``nudge serve`` runs it: connections are admitted (request deadline, per-address cap).
        config = server_config(app, settings, lifespan="on", log_level="warning")
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None
        self._task = asyncio.get_running_loop().create_task(server.serve())
        await eventually(lambda: server.started, "the server to start")
        self.port = server.servers[0].sockets[0].getsockname()[1]
        self._server = server
        self.hub = app.state.hub
        self.admission = app.state.admission
        self.gateway = app.state.gateway

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            await self._task
            self._server = None

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.hub.scheduler.settled()

    def outcomes(self, campaign: str) -> dict[str, int]:
        """What the browser reported about a campaign's messages (shown, clicked, dismissed)."""
        counts = self.hub.results.get(campaign)
        return {k: v for k, v in counts.items() if k in ("shown", "clicked", "dismissed")}

    def session(self, sid: str | None = None):
        """The state of session ``sid`` (or of the only one)."""
        if sid is not None:
            live = self.hub.sessions.get(sid)
            return live.state if live else None
        states = [live.state for live in self.hub.sessions.values()]
        return states[0] if len(states) == 1 else None




@pytest.fixture
async def serve(monkeypatch):
    """``server = await serve(campaigns_yaml)``: started; stopped at the end of the test."""
    servers: list[Server] = []
    shop = Shop()

    async def start(campaigns: str) -> Server:
        server = Server(campaigns, monkeypatch, shop)
        await server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            await server.stop()
        shop.close()


def html(server: Server, *, init: dict | None = None, body: str = "", css: str = "", title: str = "Shop") -> str:
    options = {"siteKey": KEY, **(init or {})}
    snippet = "" if init is False else (LOADER % server.http) + f"\nnudge('init', {json.dumps(options)});"
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{css}</style><script>{snippet}</script></head>
<body><button id="first">first</button>{body}<button id="last">last</button></body></html>"""


async def open_site(browser, server: Server, pages: dict[str, str], *, context=None, init_script: str = ""):
    """A tab in a fresh context (or ``context``) on the shop with ``pages``, watched by WATCH."""
    server.pages.clear()
    server.pages.update(pages)
    context = context or await browser.new_context()
    await context.add_init_script(WATCH + init_script)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    return page, errors


async def until_open(page) -> None:
    await page.wait_for_function("() => window.nudge && nudge.state === 'open'", timeout=MS)


def host(page, campaign: str):
    return page.locator(f'nudge-message[data-campaign="{campaign}"]')


async def still(message) -> None:
    """Wait until the message's entrance animation is over (it moves the box while it runs)."""
    await message.locator(".box").evaluate(
        "b => Promise.all(b.getAnimations().map(a => a.finished))"
    )


async def focused(page) -> str | None:
    """The class of the focused element inside a message, or None when focus is on the page."""
    return await page.evaluate(
        """() => { const a = document.activeElement;
                   return a && a.shadowRoot && a.shadowRoot.activeElement ? a.shadowRoot.activeElement.className : null; }"""
    )


# --- each kind of message ------------------------------------------------------------------------

KINDS = campaigns_yaml(
    on_event("modal", "open_modal", {
        "kind": "modal", "title": "A modal", "body": "Body", "cta": {"label": "Go", "url": "/#modal-cta"},
        "dismiss": "Not now", "theme": {"--nudge-accent": "rgb(0, 128, 0)", "color": "rgb(255, 0, 0)"},
    }),
    on_event("banner-top", "open_banner_top", {
        "kind": "banner", "position": "top", "title": "Top banner", "cta": {"label": "See", "url": "/#banner-cta"},
    }),
    on_event("banner-bottom", "open_banner_bottom", {
        "kind": "banner", "position": "bottom", "title": "Bottom banner", "cta": {"label": "See", "url": "/x"},
        "dismiss": "No thanks",
    }),
    on_event("toast", "open_toast", {"kind": "toast", "title": "A toast", "body": "Hi"}),
    on_event("slidein", "open_slidein", {
        "kind": "slidein", "title": "A slide-in", "cta": {"label": "Read", "url": "/#slidein-cta"},
    }),
    events=("open_modal", "open_banner_top", "open_banner_bottom", "open_toast", "open_slidein"),
)


async def test_each_kind_renders_and_is_operable_by_keyboard(browser, serve):
    server = await serve(KINDS)
    page, errors = await open_site(browser, server, {"/": html(server)})
    await page.goto(f"{server.shop}/")
    await until_open(page)

    # modal: focus moves in, Tab is trapped, the campaign theme applies, Escape closes and
    # gives the focus back.
    await page.focus("#last")
    await page.evaluate("nudge.track('open_modal')")
    modal = host(page, "modal")
    await modal.wait_for(timeout=MS)
    dialog = modal.locator('[role="dialog"]')
    assert await dialog.get_attribute("aria-modal") == "true"
    assert await dialog.get_attribute("aria-labelledby") == "nudge-title"
    assert await dialog.get_attribute("aria-describedby") == "nudge-body"
    assert await focused(page) == "nudge-cta"
    await page.keyboard.press("Tab")
    assert await focused(page) == "nudge-dismiss"
    await page.keyboard.press("Tab")
    assert await focused(page) == "nudge-cta", "Tab cycles inside the modal"
    await page.keyboard.press("Shift+Tab")
    assert await focused(page) == "nudge-dismiss"
    cta_bg = await modal.locator(".nudge-cta").evaluate("e => getComputedStyle(e).backgroundColor")
    assert cta_bg == "rgb(0, 128, 0)", "the campaign's theme"
    assert await modal.evaluate("h => h.style.color") == "", "only --nudge-* names are applied"
    await page.keyboard.press("Escape")
    await modal.wait_for(state="detached", timeout=MS)
    assert await page.evaluate("document.activeElement.id") == "last", "focus restored"
    await eventually(lambda: server.outcomes("modal") == {"shown": 1, "dismissed": 1}, "modal shown, dismissed")

    # top banner: reached with Tab, its call to action pressed with Enter
    await page.evaluate("nudge.track('open_banner_top')")
    banner = host(page, "banner-top")
    await banner.wait_for(timeout=MS)
    await still(banner)
    assert await banner.locator(".box").evaluate("b => b.getBoundingClientRect().top") == 0
    assert await banner.locator('[role="region"]').count() == 1
    assert await focused(page) is None, "a banner does not take the focus"
    await page.focus("#last")
    await page.keyboard.press("Tab")
    assert await focused(page) == "nudge-cta"
    await page.keyboard.press("Enter")
    await banner.wait_for(state="detached", timeout=MS)
    assert page.url == f"{server.shop}/#banner-cta"
    await eventually(lambda: server.outcomes("banner-top") == {"shown": 1, "clicked": 1}, "banner clicked")

    # bottom banner: Tab past the call to action to the worded dismiss, Enter
    await page.evaluate("nudge.track('open_banner_bottom')")
    bottom = host(page, "banner-bottom")
    await bottom.wait_for(timeout=MS)
    await still(bottom)
    assert await bottom.locator(".box").evaluate("b => innerHeight - b.getBoundingClientRect().bottom") == 0
    await page.focus("#last")
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    assert await focused(page) == "nudge-dismiss"
    await page.keyboard.press("Enter")
    await bottom.wait_for(state="detached", timeout=MS)
    await eventually(lambda: server.outcomes("banner-bottom") == {"shown": 1, "dismissed": 1}, "bottom dismissed")

    # toast: a polite status; Escape closes it once the keyboard is in it
    await page.evaluate("nudge.track('open_toast')")
    toast = host(page, "toast")
    await toast.wait_for(timeout=MS)
    assert await toast.locator('[role="status"]').get_attribute("aria-live") == "polite"
    await page.focus("#last")
    await page.keyboard.press("Tab")
    assert await focused(page) == "nudge-dismiss"
    assert await toast.locator(".nudge-dismiss").get_attribute("aria-label") == "Close"
    await page.keyboard.press("Escape")
    await toast.wait_for(state="detached", timeout=MS)
    await eventually(lambda: server.outcomes("toast") == {"shown": 1, "dismissed": 1}, "toast dismissed")

    # slide-in: a non-modal dialog; Space presses the call to action
    await page.evaluate("nudge.track('open_slidein')")
    slide = host(page, "slidein")
    await slide.wait_for(timeout=MS)
    assert await slide.locator('[role="dialog"]').get_attribute("aria-modal") is None
    await page.focus("#last")
    await page.keyboard.press("Tab")
    assert await focused(page) == "nudge-cta"
    await page.keyboard.press("Space")
    await slide.wait_for(state="detached", timeout=MS)
    assert page.url == f"{server.shop}/#slidein-cta"
    await eventually(lambda: server.outcomes("slidein") == {"shown": 1, "clicked": 1}, "slide-in clicked")
    assert errors == []


async def test_reduced_motion_turns_the_animations_off(browser, serve):
    server = await serve(KINDS)
    context = await browser.new_context(reduced_motion="reduce")
    page, _ = await open_site(browser, server, {"/": html(server)}, context=context)
    await page.goto(f"{server.shop}/")
    await until_open(page)
    await page.evaluate("nudge.track('open_modal')")
    modal = host(page, "modal")
    await modal.wait_for(timeout=MS)
    assert await modal.locator(".box").evaluate("b => getComputedStyle(b).animationName") == "none"


# --- hostile content and hostile pages -----------------------------------------------------------

PAYLOADS = [
    '<img src=x onerror="hit()">',
    "<script>hit()</script>",
    '"><svg onload=hit()>',
    "<iframe src=\"javascript:hit()\"></iframe>",
    "<a href=javascript:hit()>link</a>",
    "</style><img src=x onerror=hit()>",
    "<details open ontoggle=hit()>",
    "javascript:hit()",
    "{{ 7 * 7 }}",
    "<style>*{display:none}</style>",
]
XSS = " ".join(PAYLOADS)

HOSTILE = campaigns_yaml(
    on_event("xss-content", "xss_content", {
        "kind": "modal", "title": XSS, "body": XSS, "dismiss": PAYLOADS[0],
        # (a javascript: url is refused by the campaign loader already; render.html covers the
        # snippet's own check against a fake server)
        "cta": {"label": XSS, "url": "/#cta"},
        "theme": {"--nudge-bg": "red;}</style><img src=x onerror=hit()>", "--nudge-fg": "url(javascript:hit())"},
    }),
    on_event("xss-props", "xss_props", {
        "kind": "toast", "title": "{{ event.a }}", "body": "{{ event.b }} {{ event.c }}",
        "cta": {"label": "{{ event.a }}", "url": "/safe"},
    }),
    on_event("plain", "plain", {
        "kind": "modal", "title": "Still thinking about it?", "body": "Your cart is waiting.",
        "cta": {"label": "Go to checkout", "url": "/#checkout"}, "dismiss": "Not now",
    }),
    events=("xss_content", "xss_props", "plain"),
)


async def test_xss_payloads_in_content_and_event_properties_execute_nothing(browser, serve):
    server = await serve(HOSTILE)
    body = f"<div data-nudge-click='{XSS.replace(chr(39), '')}'>click me</div>"
    page, errors = await open_site(browser, server, {"/": html(server, body=body, title="x")})
    await page.goto(f"{server.shop}/")
    await until_open(page)

    await page.evaluate("nudge.track('xss_content')")
    modal = host(page, "xss-content")
    await modal.wait_for(timeout=MS)
    # Campaign text is a template of the campaign's author: {{ 7 * 7 }} there is evaluated. In
    # event properties (below) it is data and stays as it is.
    shown = XSS.replace("{{ 7 * 7 }}", "49")
    assert await modal.locator(".nudge-title").text_content() == shown
    assert await modal.locator(".nudge-body").text_content() == shown
    assert await modal.locator(".nudge-cta").text_content() == shown
    tags = await modal.evaluate("h => [...h.shadowRoot.querySelectorAll('*')].map(e => e.localName).sort().join()")
    assert tags == "button,button,div,div,div,h2,p,style", "server text created no element"
    await modal.locator(".nudge-cta").click()
    await modal.wait_for(state="detached", timeout=MS)
    assert page.url == f"{server.shop}/#cta"

    props = {"a": PAYLOADS[0], "b": XSS, "c": "{{ 7 * 7 }}"}
    await page.evaluate("props => nudge.track('xss_props', props)", props)
    toast = host(page, "xss-props")
    await toast.wait_for(timeout=MS)
    assert await toast.locator(".nudge-title").text_content() == PAYLOADS[0]
    assert await toast.locator(".nudge-body").text_content() == f"{XSS} {{{{ 7 * 7 }}}}"
    await page.evaluate("props => nudge.identify({plan: props.a})", props)
    await page.click("[data-nudge-click]")
    await eventually(lambda: (s := server.session()) and s.counters.get("click") == 1, "the click")
    assert server.session().counters["identify"] == 1, "traits reach the server as data"
    await eventually(lambda: server.outcomes("xss-content").get("clicked") == 1, "the cta click")
    assert await page.evaluate("window.__xss") == 0, "no payload ran"
    assert errors == []


HOSTILE_CSS = """
* { all: unset !important; font: italic 40px/3 serif !important; color: rgb(255, 0, 0) !important;
    background: rgb(255, 255, 0) !important; visibility: hidden !important; opacity: .2 !important;
    position: static !important; display: inline !important; transform: rotate(3deg) !important;
    box-sizing: content-box !important; }
:root { font-size: 60px !important; }
nudge-message { display: none !important; z-index: 0 !important; top: 300px !important; left: 300px !important; }
body > #cover { position: fixed !important; top: 0; left: 0; width: 100vw; height: 100vh; z-index: 2147483647 !important;
                display: block !important; visibility: visible !important; }
div, h2, p, button { margin: 50px !important; padding: 50px !important; border: 9px solid lime !important; }
"""

MEASURE = """h => {
  const r = h.shadowRoot, box = r.querySelector('.box'), title = r.querySelector('.nudge-title'), cta = r.querySelector('.nudge-cta');
  const rect = e => { const b = e.getBoundingClientRect(); return [b.x, b.y, b.width, b.height].map(Math.round); };
  const style = (e, names) => names.map(n => getComputedStyle(e)[n]);
  const x = box.getBoundingClientRect();
  return {
    host: style(h, ['display', 'position', 'visibility', 'opacity', 'zIndex', 'transform']),
    box: rect(box), title: rect(title), cta: rect(cta),
    boxStyle: style(box, ['color', 'backgroundColor', 'fontSize', 'fontFamily', 'fontStyle', 'padding', 'borderRadius']),
    ctaStyle: style(cta, ['color', 'backgroundColor', 'fontSize', 'margin', 'padding', 'borderTopWidth']),
    topmost: document.elementFromPoint(x.x + x.width / 2, x.y + x.height / 2) === h,
  };
}"""


async def test_the_pages_hostile_css_does_not_change_the_popup(browser, serve):
    server = await serve(HOSTILE)
    measured = []
    for css in ("", HOSTILE_CSS):
        page, _ = await open_site(browser, server, {"/": html(server, css=css, body='<div id="cover"></div>')})
        await page.goto(f"{server.shop}/")
        await until_open(page)
        await page.evaluate("nudge.track('plain')")
        modal = host(page, "plain")
        await modal.wait_for(timeout=MS)
        await still(modal)
        measured.append(await modal.evaluate(MEASURE))
        await page.context.close()
    clean, hostile = measured
    assert clean["topmost"] and clean["host"][0] == "flex"
    assert hostile == clean


# --- capture ------------------------------------------------------------------------------------

SPA = campaigns_yaml(
    {"id": "on-pricing", "trigger": {"path": "/pricing"}, "message": {"kind": "toast", "title": "Pricing!"}},
)


async def test_an_spa_navigation_is_captured_and_triggers_a_page_campaign(browser, serve):
    server = await serve(SPA)
    page, errors = await open_site(browser, server, {"/": html(server)})
    await page.goto(f"{server.shop}/")
    await until_open(page)
    await eventually(lambda: (s := server.session()) and s.page == "/", "the first page view")
    await page.evaluate("history.pushState({}, '', '/pricing'); document.title = 'Pricing'")
    await host(page, "on-pricing").wait_for(timeout=MS)
    assert server.session().page == "/pricing"
    await page.go_back()
    await eventually(lambda: server.session().page == "/", "the popstate page view")
    assert server.session().counters["page_view"] == 3
    assert errors == []


async def test_a_long_title_is_clipped_between_characters_never_inside_a_pair(browser, serve):
    """Text is clipped at 512 UTF-16 units; a character made of two (an emoji) straddling the
    limit goes whole, never half of it (a lone surrogate: docs/protocol.md, "Values")."""
    server = await serve(SPA)
    title = "a" * 511 + "\U0001F600" + "tail"
    page, errors = await open_site(browser, server, {"/": html(server, title=title)})
    await page.goto(f"{server.shop}/")
    await until_open(page)
    await eventually(lambda: (s := server.session()) and s.page == "/", "the first page view")
    assert server.session().title == "a" * 511
    await page.evaluate("history.pushState({}, '', '/pricing'); document.title = 'b'.repeat(510) + '\\u{1F600}\\u{1F600}'")
    await eventually(lambda: server.session().page == "/pricing", "the second page view")
    assert server.session().title == "b" * 510 + "\U0001F600"  # 512 units exactly: kept
    assert errors == []


SHIPPED = campaigns_yaml(
    on_event("shipped", "order_shipped", {"kind": "toast", "title": "Your order is on its way"}),
    events=("order_shipped",),
)


async def test_the_visitor_id_the_page_reads_is_the_one_a_backend_event_reaches(browser, serve):
    server = await serve(SHIPPED)
    # Asked in the page's own script, before nudge.js has loaded: the loader queues the call.
    body = "<script>nudge.visitorId(function (id) { window.__visitor = id; });</script>"
    page, errors = await open_site(browser, server, {"/": html(server, body=body)})
    await page.goto(f"{server.shop}/")
    await until_open(page)
    visitor = await page.evaluate("() => window.__visitor")
    assert visitor == await page.evaluate("() => nudge.visitorId()") == server.session().visitor
    # The shop's backend sends it with the order; the event reaches the open tab at once.
    def post() -> dict:
        request = urllib.request.Request(
            f"{server.http}/api/events", method="POST",
            data=json.dumps({"id": "ship-1", "visitor": visitor, "name": "order_shipped"}).encode(),
            headers={"Authorization": f"Bearer {BACKEND_KEY}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return json.load(response)

    assert (await asyncio.to_thread(post))["applied"] == "held"
    await host(page, "shipped").wait_for(timeout=MS)
    assert errors == []


async def test_exit_intent_is_reported_once_per_page(browser, serve):
    server = await serve(SPA)
    page, _ = await open_site(browser, server, {"/": html(server)})
    await page.goto(f"{server.shop}/")
    await until_open(page)
    for _ in range(2):
        await page.mouse.move(200, 200)
        await page.mouse.move(200, 5)
        await page.mouse.move(200, -20)  # out through the top edge
    await eventually(lambda: (s := server.session()) and s.counters.get("exit_intent") == 1, "exit intent")
    await page.mouse.move(200, 200)
    await page.mouse.move(200, 300)  # the bottom edge is no exit intent
    await page.evaluate("nudge.track('active')")
    await eventually(lambda: server.session().counters.get("active"), "a later event")
    assert server.session().counters["exit_intent"] == 1


# --- transport ----------------------------------------------------------------------------------

RESTART = campaigns_yaml(
    on_event("first", "first", {"kind": "toast", "title": "First"}),
    on_event("second", "second", {"kind": "slidein", "title": "Second"}),
    events=("first", "second", "later"),
)


async def test_events_tracked_together_go_in_one_evs_frame_each_applied_once(browser, serve):
    server = await serve(RESTART)
    page, errors = await open_site(browser, server, {"/": html(server)})
    await page.goto(f"{server.shop}/")
    await until_open(page)
    await page.wait_for_function("() => sessionStorage.getItem('nudge:outbox') === '[]'", timeout=MS)
    before = await page.evaluate("({...window.__frames})")
    after = await page.evaluate("""async () => {
        nudge.track('later', {n: 1}); nudge.track('later', {n: 2}); nudge.track('first');
        await null;  // the task that tracked them is done: they are written
        return {...window.__frames};
    }""")
    assert after == {**before, "evs": before["evs"] + 1}, "three events, one frame"
    await host(page, "first").wait_for(timeout=MS)
    await eventually(lambda: (s := server.session()) and s.counters.get("later") == 2, "each event of the batch")
    await page.wait_for_function("() => sessionStorage.getItem('nudge:outbox') === '[]'", timeout=MS)
    assert server.session().counters["first"] == 1
    assert server.hub.stats.duplicates == 0 and server.hub.stats.refused == 0
    assert errors == []


async def test_a_server_restart_mid_session_loses_nothing_and_shows_nothing_twice(browser, serve):
    server = await serve(RESTART)
    page, errors = await open_site(browser, server, {"/": html(server)})
    await page.goto(f"{server.shop}/")
    await until_open(page)
    await page.evaluate("nudge.track('first')")
    await host(page, "first").wait_for(timeout=MS)
    await eventually(lambda: server.outcomes("first").get("shown") == 1, "first shown")
    await page.wait_for_function("() => sessionStorage.getItem('nudge:outbox') === '[]'", timeout=MS)
    sid = server.session().id
    await server.advance(10)  # the toast has left the screen: the next message may show

    # Written to the socket but never delivered: sent, not acknowledged.
    await page.evaluate("window.__blackhole = true; nudge.track('later', {n: 1})")
    await server.stop()
    await page.wait_for_function("() => nudge.state !== 'open'", timeout=MS)
    await page.evaluate("window.__blackhole = false; nudge.track('later', {n: 2}); nudge.track('second')")
    outbox = await page.evaluate("JSON.parse(sessionStorage.getItem('nudge:outbox')).map(e => e.name)")
    assert outbox == ["later", "later", "second"]

    await server.start()  # same port, same store, same clock
    await page.evaluate("dispatchEvent(new Event('online'))")  # the browser says the network is back
    await until_open(page)
    await host(page, "second").wait_for(timeout=MS)
    await eventually(lambda: (s := server.session(sid)) and s.counters.get("later") == 2, "the resent events")
    assert server.session(sid).counters["first"] == 1
    assert server.session(sid).counters["second"] == 1
    await page.wait_for_function("() => sessionStorage.getItem('nudge:outbox') === '[]'", timeout=MS)
    assert await page.evaluate("window.__messages") == ["first#1", "second#2"], "each message shown once"
    assert await host(page, "first").count() == 1
    assert list(server.hub.sessions) == [sid], "the session was resumed, not replaced"
    assert server.hub.stats.connections == 1
    assert not [e for e in errors if "WebSocket" not in e], errors  # the refused reconnects log


async def test_the_snippet_waits_for_a_restarts_hint_then_resumes(browser, serve, monkeypatch):
    import time

    import nudge.runtime.shutdown

    server = await serve(RESTART)
    page, errors = await open_site(browser, server, {"/": html(server)})
    await page.goto(f"{server.shop}/")
    await until_open(page)
    await page.evaluate("nudge.track('first')")
    await host(page, "first").wait_for(timeout=MS)
    sid = server.session().id
    monkeypatch.setattr(nudge.runtime.shutdown, "restart_reason", lambda window, rng=None: "restart retry=1500")
    gateway = server.gateway
    began = time.monotonic()
    assert await nudge.runtime.shutdown.drain(gateway, 3.0, WAIT) == 1
    gateway.accepting = True  # the new process is up at once: only the hint delays the snippet
    await page.wait_for_function("() => nudge.state !== 'open'", timeout=MS)
    await until_open(page)
    waited = time.monotonic() - began
    assert 1.5 <= waited < 1.5 + 1.0, waited  # the hint, not the backoff's first step (< 0.5 s)
    assert list(server.hub.sessions) == [sid] and server.hub.stats.connections == 1
    assert await page.evaluate("window.__messages") == ["first#1"], "nothing shown twice"
    assert not errors, errors


async def test_msgpack_when_configured(browser, serve):
    server = await serve(RESTART)
    page, errors = await open_site(browser, server, {"/": html(server, init={"encoding": "msgpack"})})
    await page.goto(f"{server.shop}/")
    await until_open(page)
    await page.evaluate("nudge.track('first', {note: 'é ✓'})")
    await host(page, "first").wait_for(timeout=MS)
    live = next(iter(server.hub.sessions.values()))
    assert live.conn.codec.subprotocol == "nudge.v1.msgpack"
    await eventually(lambda: server.outcomes("first").get("shown") == 1, "shown over msgpack")
    assert errors == []


async def test_the_last_flush_on_page_hide_reaches_the_server_once(browser, serve):
    server = await serve(RESTART)
    pages = {"/": html(server), "/away": html(server, init=False)}
    page, errors = await open_site(browser, server, pages)
    await page.goto(f"{server.shop}/")
    await until_open(page)
    await eventually(lambda: server.session(), "the session")
    sid = server.session().id
    await page.evaluate("window.__blackhole = true; nudge.track('later', {n: 1}); nudge.track('later', {n: 2})")
    await page.goto(f"{server.shop}/away")  # pagehide: the beacon carries the two events
    await eventually(lambda: server.session(sid).counters.get("later") == 2, "the beacon's events")
    await page.goto(f"{server.shop}/")  # the next page resumes past them
    await until_open(page)
    await page.evaluate("nudge.track('first')")
    await host(page, "first").wait_for(timeout=MS)
    assert server.session(sid).counters["later"] == 2
    assert server.hub.stats.refused == 0
    assert errors == []


async def test_the_page_is_served_through_admission_as_nudge_serve_runs_it(browser, serve):
    """The server here is configured as ``nudge serve`` configures it (ops/app.py server_config):
    connections are admitted, and the page's script, socket and beacon pass admission."""
    server = await serve(RESTART)
    # A connection that sends nothing is held by admission against its deadline...
    _, silent = await asyncio.open_connection("127.0.0.1", server.port)
    await eventually(lambda: len(server.admission.waiting) == 1, "the silent connection admitted")
    silent.close()
    await eventually(lambda: not server.admission.waiting, "the silent connection gone")
    # ... and the page's own connections are served: nudge.js, the socket, the beacon.
    page, errors = await open_site(browser, server, {"/": html(server), "/away": html(server, init=False)})
    await page.goto(f"{server.shop}/")
    await until_open(page)
    await eventually(lambda: server.session(), "the session")
    sid = server.session().id
    await page.evaluate("window.__blackhole = true; nudge.track('later', {n: 1})")
    await page.goto(f"{server.shop}/away")
    await eventually(lambda: server.session(sid).counters.get("later") == 1, "the beacon's event")
    metrics = server.hub.metrics
    assert metrics.refused.get("pending_per_ip", 0) == 0 and metrics.closed.get("request_timeout", 0) == 0
    assert errors == []


# --- privacy ------------------------------------------------------------------------------------


async def test_opt_out_sends_nothing_on_later_pages(browser, serve):
    server = await serve(RESTART)
    page, errors = await open_site(browser, server, {"/": html(server), "/next": html(server)})
    await page.goto(f"{server.shop}/")
    await until_open(page)
    await eventually(lambda: server.hub.stats.events >= 1, "the first page view")
    await page.evaluate("nudge.optOut()")
    await eventually(lambda: server.hub.stats.connections == 0, "the socket closed")
    assert await page.evaluate("localStorage.getItem('nudge:visitor')") is None
    events = server.hub.stats.events
    await page.goto(f"{server.shop}/next")
    await page.wait_for_function("() => window.nudge && nudge.loaded", timeout=MS)
    await page.evaluate("nudge.track('first'); nudge.identify({plan: 'pro'}); history.pushState({}, '', '/n2')")
    await page.mouse.wheel(0, 500)
    assert await page.evaluate("[window.__sockets, nudge.state]") == [0, "closed"]
    await page.goto(f"{server.shop}/")  # pagehide: no beacon either
    await page.wait_for_function("() => window.nudge && nudge.loaded", timeout=MS)
    assert await page.evaluate("[window.__sockets, window.__beacons.length, nudge.state]") == [0, 0, "closed"]
    assert server.hub.stats.events == events
    assert server.hub.stats.connections == 0
    assert await page.evaluate("document.cookie") == "", "no cookies, ever"
    assert errors == []


async def test_global_privacy_control_is_honoured_when_configured(browser, serve):
    server = await serve(RESTART)
    gpc = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true});"
    pages = {"/": html(server, init={"respectGPC": True}), "/ignored": html(server)}
    page, errors = await open_site(browser, server, pages, init_script=gpc)
    await page.goto(f"{server.shop}/")
    await page.wait_for_function("() => window.nudge && nudge.loaded", timeout=MS)
    await page.evaluate("nudge.track('first')")
    assert await page.evaluate("[window.__sockets, localStorage.length, sessionStorage.length]") == [0, 0, 0]
    await page.goto(f"{server.shop}/ignored")  # a site that did not ask to honour GPC connects
    await until_open(page)
    assert server.hub.stats.events >= 1
    assert errors == []


async def test_memory_only_mode_stores_nothing_in_the_browser(browser, serve):
    server = await serve(RESTART)
    page, errors = await open_site(browser, server, {"/": html(server, init={"storage": "memory"})})
    await page.goto(f"{server.shop}/")
    await until_open(page)
    await page.evaluate("nudge.track('first')")
    await host(page, "first").wait_for(timeout=MS)
    assert await page.evaluate("[localStorage.length, sessionStorage.length, document.cookie]") == [0, 0, ""]
    assert errors == []
