"""A short load test against the local stack: fake provider + a real CCR (+ Redis).

Starts :class:`ccr.testing.FakeProvider` and :class:`ccr.testing.LiveCCR` (1.0.73 unless
``--ccr-version``), runs ``ccr-client loadtest`` against them in a child process (so the
load generator does not share a GIL with the fake upstream), archives the results in
``tests/load/results/<UTC timestamp>.json`` and exits with the load test's code::

    python tests/load/run_local.py                       # the default staged plan at --scale 0.1 (~24 s)
    python tests/load/run_local.py --redis               # quotas on a real redis-server
    python tests/load/run_local.py --requests 2000 --concurrency 16
    python tests/load/run_local.py --compare tests/load/results/<earlier>.json

Flags this script does not know are passed to ``ccr-client loadtest`` as they are.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from ccr.testing import DEFAULT_CCR_VERSION, Behavior, FakeProvider, LiveCCR, RedisServer

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_PLAN = ["--scale", "0.1"]
_PLAN_FLAGS = ("--requests", "--stages", "--scale", "--plan")
_CLI = "import sys; from ccr.cli import main; sys.exit(main())"


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ccr-version", default=DEFAULT_CCR_VERSION, help="CCR version to start")
    parser.add_argument("--redis", action="store_true", help="keep quotas in a real redis-server")
    parser.add_argument(
        "--upstream-delay", type=float, default=0.0, help="seconds the fake provider waits before answering"
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the JSON goes")
    return parser.parse_known_args(argv)


@contextlib.asynccontextmanager
async def maybe_redis(enabled: bool) -> AsyncIterator[str | None]:
    if not enabled:
        yield None
        return
    async with RedisServer() as redis:
        yield redis.url


async def run(options: argparse.Namespace, loadtest_args: list[str]) -> int:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    options.results_dir.mkdir(parents=True, exist_ok=True)
    out = options.results_dir / f"{stamp}.json"
    plan = [] if any(a.split("=")[0] in _PLAN_FLAGS for a in loadtest_args) else DEFAULT_PLAN
    default = Behavior.delay(options.upstream_delay) if options.upstream_delay > 0 else None
    async with (
        FakeProvider(default=default) as fake,
        LiveCCR.for_fake(fake, version=options.ccr_version) as ccr,
        maybe_redis(options.redis) as redis_url,
    ):
        argv = ["loadtest", "--url", ccr.url, "--ccr-version", options.ccr_version, "--out", str(out)]
        argv += ["--workspace", f"loadtest-{stamp.lower()}"]
        if redis_url is not None:
            argv += ["--redis-url", redis_url]
        argv += plan + loadtest_args
        print(f"run_local: CCR {options.ccr_version} at {ccr.url} (started in {ccr.startup_seconds:.1f} s)")
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", _CLI, *argv)
        try:
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        print(f"run_local: {fake.total_calls} upstream calls; exit {code}")
    if out.exists():
        print(f"run_local: results in {out}")
    return code


def main(argv: list[str] | None = None) -> int:
    options, loadtest_args = parse(sys.argv[1:] if argv is None else argv)
    return asyncio.run(run(options, loadtest_args))


if __name__ == "__main__":
    sys.exit(main())
