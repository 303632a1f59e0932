"""Settings, from command-line flags and ``NUDGE_*`` environment variables (flags win)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # the nudge package: static/, demo/, schema/
DEMO_CAMPAIGNS = PACKAGE / "demo" / "campaigns.yaml"
DEMO_KEY = "pk_demo"


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@dataclass(frozen=True, slots=True)
class Site:
    """A site that embeds the snippet, known by its publishable key."""

    key: str  # publishable: safe to put in a page
    origins: frozenset[str]  # exact page origins allowed to connect with this key ("*": any)

    def allows(self, origin: str | None) -> bool:
        """Exact match of the page's ``Origin`` header: no prefixes, no suffixes, no substrings
        (``https://shop.example.evil.io`` is not ``https://shop.example``). A missing origin and
        ``null`` (sandboxed frames, ``file:`` pages) are refused even by ``*``."""
        if origin is None or origin == "null":
            return False
        if "*" in self.origins:
            return True
        return origin in self.origins


def normal_origin(origin: str) -> str:
    """An allow-list entry as browsers send ``Origin``: lower case, no trailing slash."""
    return origin.strip().rstrip("/").lower()


def parse_site_key(entry: str) -> tuple[str, list[str]]:
    """``pk_x`` or ``pk_x=https://a.example,https://b.example``: the key and its own origins."""
    key, _, origins = entry.partition("=")
    return key.strip(), [normal_origin(o) for o in origins.split(",") if o.strip()]


@dataclass(slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    campaigns: Path | None = None  # the campaign file
    demo: bool = False  # serve the demo shop at /
    store: str = "memory://"
    site_keys: list[str] = field(default_factory=list)
    secret_keys: list[str] = field(default_factory=list)  # sk_…: admin and server-side APIs
    origins: list[str] = field(default_factory=list)  # allowed for every key
    grace: float = 300.0  # seconds a detached session stays resumable
    offline_after: float = 60.0  # seconds with no tab attached before a visitor counts as offline (rules/timeline.py)
    handshake_timeout: float = 10.0  # seconds to wait for hello
    request_timeout: float = 10.0  # seconds a connection may take to send a complete request (0: no limit)
    max_pending_connections_per_ip: int = 32  # connections from one address yet to send a request (0: no limit)
    max_pending_connections: int = 512  # connections from all addresses together yet to send a request (0: no limit)
    new_connections_per_ip: float = 50.0  # new connections a second from one address, 10 s of them saved up (0: no limit)
    idle_timeout: float = 150.0  # seconds a socket may send nothing before it is closed (0: never)
    max_connections_per_ip: int = 64  # open sockets from one client address (0: no limit)
    max_connections_per_key: int = 0  # open sockets per site key on one node (0: no limit)
    restart_window: float = 10.0  # seconds over which sockets are told to reconnect on SIGTERM
    shutdown_timeout: float = 15.0  # seconds a stop waits for sockets to close before it cancels them
    retention: float = 30 * 86400.0  # seconds a visitor's stored state outlives their last visit
    # Visitors a node keeps in memory at most (0: no cap), twice over: those it holds (a session
    # open or resumable), and those the memory store keeps. Past it the oldest idle go first.
    max_visitors: int = 100_000
    honour_gpc: bool = True  # a Sec-GPC: 1 handshake is an opt-out (no session, nothing stored)
    trusted_proxies: list[str] = field(default_factory=list)  # whose X-Forwarded-For is believed
    max_frame: int = 65536  # bytes; larger frames close the socket with 1009
    max_depth: int = 8  # maps and lists nested in one frame; deeper frames are refused (malformed)
    events_per_second: float = 50.0  # sustained, per connection
    event_burst: int = 200  # bucket size, per connection
    frames_per_second: float = 100.0  # every frame (events, acks, pings, garbage), per connection
    frame_burst: int = 400  # bucket size of that
    outbox_limit: int = 64  # unacknowledged messages kept per session
    send_queue_limit: int = 256  # frames waiting for a slow reader before it is disconnected
    ws: str = "websockets-sansio"  # uvicorn WebSocket implementation
    ws_server: str = "uvicorn"  # what serves /ws: uvicorn (with ``ws``), picows (same port; docs/scaling.md), or auto
    deflate: bool = False  # per-message deflate: costs 3-4x throughput, so off unless asked
    ping_interval: float = 20.0
    record: Path | None = None  # write the event log here (docs/replay.md)
    record_retention: float = 7 * 86400.0  # seconds event log files are kept
    record_rotate_records: int = 1_000_000  # records per event log file at most
    record_rotate_seconds: float = 3600.0  # seconds an event log file is written to at most
    replay_max_records: int = 2_000_000  # records the editor's replay of a draft reads at most
    replay_timeout: float = 60.0  # seconds the editor's replay of a draft runs at most
    log_level: str = "info"
    node: str | None = None  # this node's id among those sharing a store (default: made up)
    write_behind: float = 0.5  # seconds between batched writes of changed sessions (shared store)
    heartbeat: float = 1.0  # seconds between relay probes and store health checks (shared store)
    timer_poll: float = 1.0  # seconds between looks for timers other nodes added (shared store)
    webhook_url: str | None = None  # deprecated: an endpoint taking ``offline`` events (webhooks.configured_endpoints)
    webhook_secret: str = ""  # deprecated: that endpoint's secret
    webhooks: Path | None = None  # endpoints for webhooks out (decisions, outcomes): docs/operate.md
    webhook_allow: list[str] = field(default_factory=list)  # internal hosts webhooks may reach (SSRF)
    log_format: str = "text"  # or "json": one JSON object a line (docs/operate.md)

    def sites(self) -> dict[str, Site]:
        """Each publishable key with its allow-list: the origins given with the key
        (``pk_x=https://a.example,…``), else the ones given for every key (``--origin``)."""
        own: dict[str, list[str]] = {}
        for entry in self.site_keys:
            key, origins = parse_site_key(entry)
            if key:
                own.setdefault(key, []).extend(origins)
        shared = {normal_origin(o) for o in self.origins}
        if self.demo:
            own.setdefault(DEMO_KEY, [])
            for host in {self.host, "localhost", "127.0.0.1"}:
                shared.add(f"http://{host}:{self.port}")
        return {key: Site(key, frozenset(mine or shared)) for key, mine in own.items()}

    def problems(self) -> list[str]:
        """Settings that cannot work together (``create_app`` refuses to start with any)."""
        found = []
        if self.outbox_limit >= self.send_queue_limit:
            # A resume sends the session's unacknowledged messages at once: they must fit in the
            # send queue with room to spare, or the socket would be closed as a slow reader.
            found.append(
                f"outbox_limit ({self.outbox_limit}) must be below send_queue_limit ({self.send_queue_limit}): "
                "a resumed session's unacknowledged messages are sent at once"
            )
        if self.max_visitors < 0:
            found.append(f"max_visitors ({self.max_visitors}) must be 0 (no cap) or more")
        if self.record_rotate_records < 1:
            found.append(f"record_rotate_records must be at least 1, got {self.record_rotate_records}")
        if not self.record_rotate_seconds > 0:
            found.append(f"record_rotate_seconds must be above 0, got {self.record_rotate_seconds:g}")
        if self.replay_max_records < 1:
            found.append(f"replay_max_records must be at least 1, got {self.replay_max_records}")
        if not self.replay_timeout > 0:
            found.append(f"replay_timeout must be above 0, got {self.replay_timeout:g}")
        if self.ws_server not in ("auto", "uvicorn", "picows"):
            found.append(f"ws_server must be auto, uvicorn or picows, got {self.ws_server!r}")
        elif self.ws_server == "picows" and not _installed("picows"):
            found.append("--ws-server picows needs picows: pip install 'nudge-server[picows]'")
        elif self.ws_server == "picows" and self.deflate:
            found.append("--deflate needs --ws-server uvicorn: picows has no per-message deflate")
        return found

    def socket_layer(self) -> str:
        """What serves /ws: ``auto`` is picows when it is installed and deflate is off, else uvicorn."""
        if self.ws_server == "auto":
            return "picows" if not self.deflate and _installed("picows") else "uvicorn"
        return self.ws_server

    def campaign_file(self) -> Path | None:
        if self.campaigns is not None:
            return self.campaigns
        return DEMO_CAMPAIGNS if self.demo else None


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def from_environment(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from ``NUDGE_*`` variables (and ``PORT``, as platforms set it)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    settings = Settings()
    if "NUDGE_HOST" in env:
        settings.host = env["NUDGE_HOST"]
    if "NUDGE_PORT" in env or "PORT" in env:
        settings.port = int(env.get("NUDGE_PORT") or env["PORT"])
    if env.get("NUDGE_CAMPAIGNS"):
        settings.campaigns = Path(env["NUDGE_CAMPAIGNS"])
    if env.get("NUDGE_DEMO", "").lower() in ("1", "true", "yes"):
        settings.demo = True
    if env.get("NUDGE_STORE"):
        settings.store = env["NUDGE_STORE"]
    keys = env.get("NUDGE_SITE_KEYS") or ""
    # "pk_a;pk_b", or with origins of their own "pk_a=https://a.example,https://b.example;pk_b"
    settings.site_keys = [k.strip() for k in keys.split(";") if k.strip()] if ("=" in keys or ";" in keys) else _split(keys)
    settings.secret_keys = _split(env.get("NUDGE_SECRET_KEYS"))
    settings.origins = _split(env.get("NUDGE_ALLOWED_ORIGINS"))
    settings.trusted_proxies = _split(env.get("NUDGE_TRUSTED_PROXIES"))
    settings.webhook_allow = _split(env.get("NUDGE_WEBHOOK_ALLOW"))
    for name, attr, kind in (
        ("NUDGE_GRACE", "grace", float),
        ("NUDGE_OFFLINE_AFTER", "offline_after", float),
        ("NUDGE_MAX_FRAME", "max_frame", int),
        ("NUDGE_MAX_DEPTH", "max_depth", int),
        ("NUDGE_IDLE_TIMEOUT", "idle_timeout", float),
        ("NUDGE_RESTART_WINDOW", "restart_window", float),
        ("NUDGE_RETENTION", "retention", float),
        ("NUDGE_MAX_VISITORS", "max_visitors", int),
        ("NUDGE_SHUTDOWN_TIMEOUT", "shutdown_timeout", float),
        ("NUDGE_HANDSHAKE_TIMEOUT", "handshake_timeout", float),
        ("NUDGE_REQUEST_TIMEOUT", "request_timeout", float),
        ("NUDGE_MAX_PENDING_CONNECTIONS_PER_IP", "max_pending_connections_per_ip", int),
        ("NUDGE_MAX_PENDING_CONNECTIONS", "max_pending_connections", int),
        ("NUDGE_NEW_CONNECTIONS_PER_IP", "new_connections_per_ip", float),
        ("NUDGE_MAX_CONNECTIONS_PER_IP", "max_connections_per_ip", int),
        ("NUDGE_MAX_CONNECTIONS_PER_KEY", "max_connections_per_key", int),
        ("NUDGE_EVENTS_PER_SECOND", "events_per_second", float),
        ("NUDGE_EVENT_BURST", "event_burst", int),
        ("NUDGE_FRAMES_PER_SECOND", "frames_per_second", float),
        ("NUDGE_FRAME_BURST", "frame_burst", int),
        ("NUDGE_WS", "ws", str),
        ("NUDGE_WS_SERVER", "ws_server", str),
        ("NUDGE_LOG_LEVEL", "log_level", str),
        ("NUDGE_NODE", "node", str),
        ("NUDGE_WRITE_BEHIND", "write_behind", float),
        ("NUDGE_HEARTBEAT", "heartbeat", float),
        ("NUDGE_TIMER_POLL", "timer_poll", float),
        ("NUDGE_WEBHOOK_URL", "webhook_url", str),
        ("NUDGE_WEBHOOK_SECRET", "webhook_secret", str),
        ("NUDGE_REPLAY_MAX_RECORDS", "replay_max_records", int),
        ("NUDGE_REPLAY_TIMEOUT", "replay_timeout", float),
    ):
        if env.get(name):
            setattr(settings, attr, kind(env[name]))
    if env.get("NUDGE_RECORD"):
        settings.record = Path(env["NUDGE_RECORD"])
    if env.get("NUDGE_RECORD_RETENTION"):
        settings.record_retention = float(env["NUDGE_RECORD_RETENTION"])
    if env.get("NUDGE_RECORD_ROTATE_RECORDS"):
        settings.record_rotate_records = int(env["NUDGE_RECORD_ROTATE_RECORDS"])
    if env.get("NUDGE_RECORD_ROTATE_SECONDS"):
        settings.record_rotate_seconds = float(env["NUDGE_RECORD_ROTATE_SECONDS"])
    if env.get("NUDGE_IGNORE_GPC", "").lower() in ("1", "true", "yes"):
        settings.honour_gpc = False
    if env.get("NUDGE_WEBHOOKS"):
        settings.webhooks = Path(env["NUDGE_WEBHOOKS"])
    if env.get("NUDGE_LOG_FORMAT"):
        settings.log_format = env["NUDGE_LOG_FORMAT"]
    if env.get("NUDGE_DEFLATE", "").lower() in ("1", "true", "yes"):
        settings.deflate = True
    return settings
