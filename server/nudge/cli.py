"""The ``nudge`` command: ``nudge serve`` runs the server, ``nudge check`` validates a campaign file,
``nudge loadtest`` plays simulated browsers against a server."""

from __future__ import annotations

import argparse
import contextlib
import sys
from datetime import UTC
from pathlib import Path

from nudge import __version__
from nudge.runtime.config import from_environment


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from nudge.errors import CampaignError, WebhookConfigError
    from nudge.ops.app import create_app

    settings = from_environment()
    for name in (
        "host", "port", "campaigns", "store", "ws", "ws_server", "grace", "offline_after", "log_level", "record", "record_retention",
        "record_rotate_records", "record_rotate_seconds", "node", "webhooks", "log_format",
    ):
        value = getattr(args, name)
        if value is not None:
            setattr(settings, name, value)
    if args.demo:
        settings.demo = True
    if args.deflate:
        settings.deflate = True
    if args.ignore_gpc:
        settings.honour_gpc = False
    settings.site_keys += args.site_key or []
    settings.secret_keys += args.secret_key or []
    settings.origins += args.origin or []
    settings.trusted_proxies += args.trusted_proxy or []
    settings.webhook_allow += args.webhook_allow or []
    for name in ("idle_timeout", "restart_window", "shutdown_timeout", "max_connections_per_ip", "max_connections_per_key", "retention",
                 "request_timeout", "max_pending_connections_per_ip", "max_pending_connections", "new_connections_per_ip", "max_visitors"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(settings, name, value)
    if settings.deflate and settings.ws != "websockets-sansio":
        # Only uvicorn's websockets-sansio bounds deflate's windows (12 bits each way, memLevel 5);
        # its other implementations would let every client claim 32 KiB windows and more.
        print(f"nudge: --deflate needs --ws websockets-sansio (it bounds compression windows); got {settings.ws}", file=sys.stderr)
        return 2
    from nudge.ops.logs import configure

    configure(settings.log_format, settings.log_level)
    try:
        app = create_app(settings)
    except CampaignError as exc:
        print(f"nudge: invalid campaign file:\n{exc}", file=sys.stderr)
        return 2
    except WebhookConfigError as exc:
        print(f"nudge: invalid webhooks: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"nudge: invalid settings: {exc}", file=sys.stderr)
        return 2
    if settings.demo:
        print(f"Nudge demo shop: http://{settings.host}:{settings.port}/", file=sys.stderr)
        if not settings.secret_keys:
            # Printed, not logged: the log filter blanks every secret key, this one too.
            print(f"Admin API and dashboard key for this run: {app.state.secret_keys[0]}", file=sys.stderr)
    from nudge.ops.app import server_config
    from nudge.runtime.shutdown import GracefulServer

    config = server_config(
        app,
        settings,
        ws_ping_interval=settings.ping_interval,
        ws_ping_timeout=settings.ping_interval,
        log_level=settings.log_level,
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=settings.shutdown_timeout,  # a float: fractions of a second are honoured
    )
    server = GracefulServer(config)
    from nudge.ops import redact

    redact.install("uvicorn", "uvicorn.error", "uvicorn.access")  # after uvicorn set up its handlers
    server.run()
    return 0


def _is_webhooks_file(path: Path) -> bool:
    """A file with ``endpoints:`` and no ``campaigns:`` at the top is a webhooks file."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # the campaign loader says what is wrong with it
    return isinstance(data, dict) and "endpoints" in data and "campaigns" not in data


def _check(args: argparse.Namespace) -> int:
    from nudge.errors import CampaignError, WebhookConfigError
    from nudge.ops.webhooks import load_endpoints
    from nudge.rules.campaigns import load_file

    if not args.files and not args.webhooks:
        print("nudge check: name campaign files, or --webhooks FILE", file=sys.stderr)
        return 2
    status = 0
    hooks = list(args.webhooks or []) + [p for p in args.files if _is_webhooks_file(p)]
    allow = from_environment().webhook_allow + (args.webhook_allow or [])
    for path in hooks:
        try:
            endpoints = load_endpoints(path, allow)
        except WebhookConfigError as exc:
            print(exc, file=sys.stderr)
            status = 1
        else:
            print(f"{path}: ok, {len(endpoints)} webhook endpoints")
    for path in args.files:
        if path in hooks:
            continue
        try:
            campaign_set = load_file(path)
        except CampaignError as exc:
            print(exc, file=sys.stderr)
            status = 1
        else:
            for warning in campaign_set.warnings:
                print(f"warning: {warning}", file=sys.stderr)
            more = f", {len(campaign_set.warnings)} warnings" if campaign_set.warnings else ""
            print(f"{path}: ok, {len(campaign_set.campaigns)} campaigns{more}")
    return status


def _webhook_secret(args: argparse.Namespace) -> int:
    from nudge.ops.webhooks import new_secret

    print(new_secret())
    return 0


def _explain(args: argparse.Namespace) -> int:
    import json
    import os
    import urllib.error
    import urllib.parse
    import urllib.request
    from datetime import datetime

    from nudge.rules.engine import relative

    key = args.key or os.environ.get("NUDGE_SECRET_KEY")
    if not key:
        print("nudge explain: a secret key is needed (--key or NUDGE_SECRET_KEY)", file=sys.stderr)
        return 2
    query = urllib.parse.urlencode({"session": args.session, "campaign": args.campaign})
    request = urllib.request.Request(f"{args.url.rstrip('/')}/api/explain?{query}", headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            report = json.load(response)
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            body = json.loads(body)["error"]
        print(f"nudge explain: {body} ({exc.code})", file=sys.stderr)
        return 2 if exc.code in (400, 404) else 1  # 2: what was asked for does not exist
    except OSError as exc:
        print(f"nudge explain: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"campaign {report['campaign']} in session {report['session']} (visitor {report['visitor']})")
    shown = report.get("shown", {})
    print(f"  shown: {shown.get('session')} this session, {shown.get('last_24h')} in 24 h, {shown.get('lifetime')} ever")
    for check in report.get("checks", []):
        mark = {True: "ok ", False: "NO ", None: "   "}[check["ok"]]
        print(f"  {mark} {check['check']}: {check['detail']}")
    now = report.get("now")
    for decision in report.get("decisions", []):
        variant = f" [{decision['variant']}]" if decision.get("variant") else ""
        at = datetime.fromtimestamp(decision["at"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ago = f" ({relative(decision['at'] - now)})" if now is not None else ""
        print(f"  at {at}{ago}: {decision['outcome']}{variant}")
    return 0


def _replay(args: argparse.Namespace) -> int:
    import json

    from nudge.calibrate import recording, replay, report
    from nudge.errors import CampaignError
    from nudge.rules.campaigns import load_file

    try:
        sets = [load_file(args.campaigns)] + ([load_file(args.against)] if args.against else [])
    except CampaignError as exc:
        print(exc, file=sys.stderr)
        return 2
    progress = None if (args.json or args.quiet) else replay.print_progress
    replays = replay.run(recording.read(args.logs), sets, grace=args.grace, keep_outcomes=bool(args.against or args.html), progress=progress)
    if progress is not None:
        sys.stderr.write("\r" + " " * 60 + "\r")
    if args.html:
        page = report.html_report(
            replays[0], title=f"Nudge replay: {args.campaigns.name}",
            against=replays[1] if args.against else None, against_title=args.against.name if args.against else "B",
        )
        Path(args.html).write_text(page, encoding="utf-8")
        print(f"HTML report: {args.html}", file=sys.stderr)
    if args.against:
        a, b = replays
        samples = report.changed_visitors(a, b)
        if args.json:
            print(json.dumps({"a": a.summary(), "b": b.summary(), "changed": samples}, indent=2))
        else:
            print(report.compare_text(a, b, samples))
        return 0
    if args.json:
        print(json.dumps({"events": replays[0].events, "visitors": len(replays[0].visitors), "campaigns": replays[0].summary()}, indent=2))
    else:
        print(report.text(replays[0]))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from nudge.calibrate import scenario
    from nudge.errors import ScenarioError

    paths = [p for arg in args.scenarios for p in (sorted(arg.glob("*.yaml")) if arg.is_dir() else [arg])]
    if not paths:
        print("no scenario files found", file=sys.stderr)
        return 2
    met = unmet = 0
    seconds = 0.0
    for path in paths:
        try:
            result = scenario.run(scenario.load(path))
        except ScenarioError as exc:
            print(exc, file=sys.stderr)
            return 2
        met, unmet, seconds = met + result.met, unmet + len(result.unmet), seconds + result.seconds
        if not args.quiet or not result.ok:
            print("\n".join(result.lines))
            print()
        for failure in result.unmet:
            print(f"unmet: {failure}", file=sys.stderr)
    print(f"{len(paths)} scenario{'s' if len(paths) != 1 else ''}: {met} expectations met, {unmet} unmet ({seconds * 1000:.1f} ms)")
    return 1 if unmet else 0


def _schema(args: argparse.Namespace) -> int:
    from nudge.runtime.config import PACKAGE

    sys.stdout.write((PACKAGE / "schema" / "campaigns.schema.json").read_text(encoding="utf-8"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nudge", description="Self-hosted real-time engagement server.")
    parser.add_argument("--version", action="version", version=f"nudge {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument("--demo", action="store_true", help="serve the demo shop at / with its campaigns (NUDGE_DEMO)")
    serve.add_argument("--campaigns", type=Path, help="campaign file, YAML or JSON (NUDGE_CAMPAIGNS)")
    serve.add_argument("--host", help="address to listen on (NUDGE_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (NUDGE_PORT or PORT; default 8000)")
    serve.add_argument("--site-key", action="append", help="a publishable site key, repeatable, optionally with its own allowed origins: pk_x=https://a.example,https://b.example (NUDGE_SITE_KEYS, separated by ;)")
    serve.add_argument("--origin", action="append", help="an allowed page origin such as https://shop.example, repeatable (NUDGE_ALLOWED_ORIGINS)")
    serve.add_argument("--secret-key", action="append", help="a secret key (sk_…) for the admin API, repeatable (NUDGE_SECRET_KEYS); never put it in a page")
    serve.add_argument("--store", help="memory:// (default), memory:///path/snapshot.msgpack (kept across a graceful stop), or redis://host:6379/0 shared by several nodes (NUDGE_STORE)")
    serve.add_argument("--node", help="this node's id among those sharing a Redis store (NUDGE_NODE; default: made up at start)")
    serve.add_argument("--grace", type=float, help="seconds a disconnected session stays resumable (NUDGE_GRACE; default 300)")
    serve.add_argument("--offline-after", type=float, help="seconds with no tab attached before a visitor counts as offline (NUDGE_OFFLINE_AFTER; default 60)")
    serve.add_argument("--ws", help="uvicorn WebSocket implementation (NUDGE_WS; default websockets-sansio)")
    serve.add_argument("--ws-server", choices=["auto", "uvicorn", "picows"],
                       help="what serves /ws on the server's port: picows (pip install 'nudge-server[picows]'), HTTP staying on "
                            "uvicorn, or uvicorn itself; auto: picows when installed and --deflate is off "
                            "(NUDGE_WS_SERVER; default uvicorn; docs/scaling.md)")
    serve.add_argument("--deflate", action="store_true", help="enable per-message deflate (NUDGE_DEFLATE); costs throughput and memory")
    serve.add_argument("--record", type=Path, help="write the event log to this directory, for nudge replay (NUDGE_RECORD)")
    serve.add_argument("--record-retention", type=float, help="seconds event log files are kept (NUDGE_RECORD_RETENTION; default 7 days)")
    serve.add_argument("--record-rotate-records", type=int, help="records per event log file at most (NUDGE_RECORD_ROTATE_RECORDS; default 1,000,000)")
    serve.add_argument("--record-rotate-seconds", type=float, help="seconds an event log file is written to at most (NUDGE_RECORD_ROTATE_SECONDS; default 3600)")
    serve.add_argument("--log-level", help="debug, info, warning (NUDGE_LOG_LEVEL)")
    serve.add_argument("--retention", type=float, help="seconds a visitor's stored state outlives their last visit (NUDGE_RETENTION; default 30 days)")
    serve.add_argument("--max-visitors", type=int, help="visitors kept in memory at most, the oldest idle going first (NUDGE_MAX_VISITORS; default 100000, 0: no cap)")
    serve.add_argument("--ignore-gpc", action="store_true", help="serve visitors whose browser sends Global Privacy Control (NUDGE_IGNORE_GPC); by default they are opted out")
    serve.add_argument("--idle-timeout", type=float, help="seconds a socket may send nothing before it is closed (NUDGE_IDLE_TIMEOUT; default 150)")
    serve.add_argument("--max-connections-per-ip", type=int, help="open sockets per client address, 0 for no limit (NUDGE_MAX_CONNECTIONS_PER_IP; default 64)")
    serve.add_argument("--request-timeout", type=float, help="seconds a connection may take to send a complete request, a WebSocket upgrade included, 0 for no limit (NUDGE_REQUEST_TIMEOUT; default 10)")
    serve.add_argument("--max-pending-connections-per-ip", type=int, help="connections per client address that have not sent a request yet, 0 for no limit (NUDGE_MAX_PENDING_CONNECTIONS_PER_IP; default 32)")
    serve.add_argument("--max-pending-connections", type=int, help="connections from all addresses together that have not sent a request yet, 0 for no limit (NUDGE_MAX_PENDING_CONNECTIONS; default 512)")
    serve.add_argument("--new-connections-per-ip", type=float, help="new connections a second from one client address, ten seconds of them saved up, 0 for no limit (NUDGE_NEW_CONNECTIONS_PER_IP; default 50)")
    serve.add_argument("--max-connections-per-key", type=int, help="open sockets per site key on this node, 0 for no limit (NUDGE_MAX_CONNECTIONS_PER_KEY; default 0)")
    serve.add_argument("--trusted-proxy", action="append", help="an address or network whose X-Forwarded-For is believed, repeatable (NUDGE_TRUSTED_PROXIES)")
    serve.add_argument("--restart-window", type=float, help="seconds over which sockets are told to reconnect when the server stops (NUDGE_RESTART_WINDOW; default 10)")
    serve.add_argument("--shutdown-timeout", type=float, help="seconds a stop waits for sockets to close (NUDGE_SHUTDOWN_TIMEOUT; default 15)")
    serve.add_argument("--log-format", choices=["text", "json"], help="text (default) or json: one object a line (NUDGE_LOG_FORMAT)")
    serve.add_argument("--webhooks", type=Path, help="a file of webhook endpoints for decisions and outcomes (NUDGE_WEBHOOKS; docs/operate.md)")
    serve.add_argument("--webhook-allow", action="append", help="a host (name or address) on an internal network that webhooks may reach, repeatable (NUDGE_WEBHOOK_ALLOW); loopback, private and link-local targets are refused otherwise")
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="validate campaign files and webhooks files")
    check.add_argument("files", nargs="*", type=Path, help="campaign files (a file of endpoints: is checked as a webhooks file)")
    check.add_argument("--webhooks", action="append", type=Path, help="a webhooks file to check, repeatable")
    check.add_argument("--webhook-allow", action="append", help="an internal host the server allows (as nudge serve --webhook-allow)")
    check.set_defaults(run=_check)

    secret = commands.add_parser("webhook-secret", help="print a new whsec_ secret for a webhook endpoint")
    secret.set_defaults(run=_webhook_secret)

    explain = commands.add_parser("explain", help="why a campaign did or did not show in a live session")
    explain.add_argument("--session", required=True)
    explain.add_argument("--campaign", required=True)
    explain.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default http://127.0.0.1:8000)")
    explain.add_argument("--key", help="a secret key (NUDGE_SECRET_KEY)")
    explain.add_argument("--json", action="store_true")
    explain.set_defaults(run=_explain)

    replay_cmd = commands.add_parser("replay", help="replay an event log against campaigns (and compare two campaign files)")
    replay_cmd.add_argument("logs", nargs="+", help="event log files (.jsonl.gz or .jsonl) or directories of them")
    replay_cmd.add_argument("--campaigns", type=Path, required=True)
    replay_cmd.add_argument("--against", type=Path, help="a second campaign file: show how its counts differ")
    replay_cmd.add_argument("--grace", type=float, help="seconds a disconnected session stays resumable (default: the log's)")
    replay_cmd.add_argument("--json", action="store_true")
    replay_cmd.add_argument("--html", help="also write an HTML report with charts to this file")
    replay_cmd.add_argument("--quiet", action="store_true", help="no progress on stderr")
    replay_cmd.set_defaults(run=_replay)

    simulate = commands.add_parser(
        "simulate", help="play scenario files (visitors' steps on a virtual clock) and check what they expect",
        description="Play each scenario (YAML: a campaign file, visitors' steps at virtual times, expectations) "
        "through the engine and timeline the server runs; print the timeline; exit 1 when an expectation is unmet, "
        "2 when a file is invalid. See docs/campaigns.md, 'Testing a campaign before shipping it'.",
    )
    simulate.add_argument("scenarios", nargs="+", type=Path, help="scenario files, or directories of *.yaml")
    simulate.add_argument("--quiet", action="store_true", help="print only the summary and what failed")
    simulate.set_defaults(run=_simulate)

    schema = commands.add_parser("schema", help="print the JSON Schema of campaign files")
    schema.set_defaults(run=_schema)

    loadtest = commands.add_parser(
        "loadtest", help="simulated browsers against a running server; latency and throughput",
        description="Open N simulated browsers against a Nudge server and play realistic visits. "
        "The server rate-limits each connection (NUDGE_EVENTS_PER_SECOND): raise it for flat-out runs.",
    )
    from nudge.loadtest import add_arguments, command

    add_arguments(loadtest)
    loadtest.set_defaults(run=command)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
