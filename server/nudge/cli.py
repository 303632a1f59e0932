"""The ``nudge`` command: ``nudge serve`` runs the server, ``nudge check`` validates a campaign file."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from . import __version__
from .config import from_environment


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .errors import CampaignError

    settings = from_environment()
    for name in ("host", "port", "campaigns", "store", "ws", "grace", "log_level", "node"):
        value = getattr(args, name)
        if value is not None:
            setattr(settings, name, value)
    if args.demo:
        settings.demo = True
    if args.deflate:
        settings.deflate = True
    settings.site_keys += args.site_key or []
    settings.origins += args.origin or []
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app(settings)
    except CampaignError as exc:
        print(f"nudge: invalid campaign file:\n{exc}", file=sys.stderr)
        return 2
    if settings.demo:
        print(f"Nudge demo shop: http://{settings.host}:{settings.port}/", file=sys.stderr)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        ws=settings.ws,
        ws_max_size=settings.max_frame,
        ws_per_message_deflate=settings.deflate,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_interval,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    from .campaigns import load_file
    from .errors import CampaignError

    status = 0
    for path in args.files:
        try:
            campaign_set = load_file(path)
        except CampaignError as exc:
            print(exc, file=sys.stderr)
            status = 1
        else:
            print(f"{path}: ok, {len(campaign_set.campaigns)} campaigns")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nudge", description="Self-hosted real-time engagement server.")
    parser.add_argument("--version", action="version", version=f"nudge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--demo", action="store_true", help="serve the demo shop at / with its campaigns (NUDGE_DEMO)")
    serve.add_argument("--campaigns", type=Path, help="campaign file, YAML or JSON (NUDGE_CAMPAIGNS)")
    serve.add_argument("--host", help="address to listen on (NUDGE_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (NUDGE_PORT or PORT; default 8000)")
    serve.add_argument("--site-key", action="append", help="a publishable site key, repeatable (NUDGE_SITE_KEYS, comma-separated)")
    serve.add_argument("--origin", action="append", help="an allowed page origin such as https://shop.example, repeatable (NUDGE_ALLOWED_ORIGINS)")
    serve.add_argument("--store", help="memory:// (default), memory:///path/snapshot.msgpack (kept across a graceful stop), or redis://host:6379/0 shared by several nodes (NUDGE_STORE)")
    serve.add_argument("--node", help="this node's id among those sharing a Redis store (NUDGE_NODE; default: made up at start)")
    serve.add_argument("--grace", type=float, help="seconds a disconnected session stays resumable (NUDGE_GRACE; default 300)")
    serve.add_argument("--ws", help="uvicorn WebSocket implementation (NUDGE_WS; default websockets-sansio)")
    serve.add_argument("--deflate", action="store_true", help="enable per-message deflate (NUDGE_DEFLATE); costs throughput and memory")
    serve.add_argument("--log-level", help="debug, info, warning (NUDGE_LOG_LEVEL)")
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="validate campaign files")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(run=_check)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
