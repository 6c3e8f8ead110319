"""``ccr-client metrics serve``: a scrape endpoint for scripts without a web server.

Short-lived scripts cannot be scraped themselves. Run them with prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR=/some/dir``) and let this long-lived
command serve what they all wrote there; without that directory it serves this
process's own registry.
"""

from __future__ import annotations

import argparse
import os
import threading


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="metrics_command", required=True, metavar="ACTION")
    serve = sub.add_parser("serve", help="serve /metrics on 127.0.0.1:PORT until interrupted")
    serve.add_argument("--port", type=int, required=True)
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument(
        "--multiprocess-dir",
        default=os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
        help="aggregate metrics written by other processes (default: PROMETHEUS_MULTIPROC_DIR)",
    )


def run(args: argparse.Namespace) -> int:
    from prometheus_client import REGISTRY, CollectorRegistry

    from ccr._telemetry import serve_metrics
    from ccr.cli._common import BadInput, Unavailable, check_multiprocess_dir

    if not 0 < args.port < 65536:
        raise BadInput("--port: must be 1-65535")
    registry = REGISTRY
    if args.multiprocess_dir:
        from prometheus_client import multiprocess

        check_multiprocess_dir(args.multiprocess_dir)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=args.multiprocess_dir)  # type: ignore[no-untyped-call]
    try:
        server = serve_metrics(args.port, host=args.host, registry=registry)
    except OSError as exc:  # the port is taken, or the address is not this host's
        reason = exc.strerror or type(exc).__name__
        raise Unavailable(f"error: cannot serve on {args.host}:{args.port} ({reason})") from None
    print(f"serving metrics on http://{args.host}:{args.port}/metrics (Ctrl-C to stop)", flush=True)
    try:
        threading.Event().wait()
    finally:
        server.shutdown()
    return 0
