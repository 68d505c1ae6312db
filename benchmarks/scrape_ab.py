"""/metrics latency of this tree against another version of the stack, in paired rounds, idle and under load.

    git archive <commit> image/project | tar -x -C /tmp/base       # the version to compare with
    .venv/bin/python benchmarks/scrape_ab.py /tmp/base/image/project/serve [--rounds 6] [--scrapes 40]

Both versions serve the 100-route app (benchmarks/apps/routes100) on gunicorn with 4 workers, at once, from this
tree's virtualenv. Each round measures A (the given ``serve``) and B (this tree's), in an order reversed every other
round: ``--scrapes`` scrapes of /metrics, each on a fresh connection and followed by GET /r/1 the same way (a plain
request's latency: the floor under that load), first idle, then while wrk loads that server's 100 routes
(``--connections``, bounded in time). ``--warm-up`` scrapes first, unmeasured. Prints p50/p99 per version and the
median over rounds of B / A within a round (with its range), so a slow spell of a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

from .procs import APPS, SERVE, Server, copy_project, get  # noqa: E402
from .run import ROUTES_LUA, _percentile  # noqa: E402


class _Serve(Server):
    """A stack server started from the ``serve`` script of any version of the stack."""

    serve: Path = SERVE

    def _command(self) -> tuple[list[str], dict]:
        _, env = super()._command()
        return [str(self.serve)], env


def _start(serve: Path, warm_up: int) -> _Serve:
    srv = _Serve("stack-gunicorn", project=copy_project(APPS / "routes100"), workers=4)
    srv.serve = serve
    srv.start()
    srv.wait_workers(4)
    with ThreadPoolExecutor(max_workers=8) as pool:  # fresh connections: every worker sees every route
        list(pool.map(lambda i: get(srv.port, f"/r/{i % 100}"), range(800)))
    for _ in range(warm_up):
        get(srv.port, "/metrics", timeout=30)
    return srv


def _round(srv: _Serve, scrapes: int, connections: int, script: Path | None) -> tuple[list[float], list[float]]:
    """(scrape latencies, GET /r/1 latencies), seconds, under wrk with ``script`` when given (else idle)."""
    load = None
    if script is not None:
        load = subprocess.Popen(["wrk", "-t2", f"-c{connections}", "-d60s", "--timeout", "5s", "-s", str(script),
                                 f"http://127.0.0.1:{srv.port}/"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    scraped, floor = [], []
    try:
        for _ in range(scrapes):
            for path, into in (("/metrics", scraped), ("/r/1", floor)):
                began = time.monotonic()
                status, _ = get(srv.port, path, timeout=30)
                into.append(time.monotonic() - began)
                assert status == 200, (path, status)
                time.sleep(0.02)
    finally:
        if load is not None:
            load.terminate()
            load.wait(10)
    return scraped, floor


def main() -> int:
    """Measure and print; return 0, or 2 when the baseline or wrk is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", type=Path, help="the serve script of the version to compare with (A)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--scrapes", type=int, default=40, help="per version, per round")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warm-up", type=int, default=40)
    args = parser.parse_args()
    if not args.baseline.is_file() or not shutil.which("wrk"):
        print("benchmarks/scrape_ab.py: needs the baseline's serve script and wrk (Debian: apt-get install wrk)",
              file=sys.stderr)
        return 2
    servers: dict[str, _Serve] = {}
    try:
        for name, serve in (("A", args.baseline.resolve()), ("B", SERVE)):
            servers[name] = _start(serve, args.warm_up)
        script = servers["B"].workdir / "routes.lua"
        script.write_text(ROUTES_LUA)
        for loaded in (False, True):
            scraped = {name: [] for name in servers}
            floor = {name: [] for name in servers}
            p50s, p99s = [], []
            for index in range(args.rounds):
                this = {}
                for name in (list(servers) if index % 2 == 0 else list(servers)[::-1]):
                    this[name], plain = _round(servers[name], args.scrapes, args.connections,
                                               script if loaded else None)
                    scraped[name] += this[name]
                    floor[name] += plain
                p50s.append(_percentile(this["B"], 0.5) / _percentile(this["A"], 0.5))
                p99s.append(_percentile(this["B"], 0.99) / _percentile(this["A"], 0.99))
            print(f"{'under wrk load, ' + str(args.connections) + ' connections' if loaded else 'idle'}: "
                  f"{args.rounds} rounds x {args.scrapes} scrapes per version")
            for name, label in (("A", f"A {args.baseline}"), ("B", "B this tree")):
                print(f"  {label}: /metrics p50 {_percentile(scraped[name], 0.5) * 1000:.1f} ms, "
                      f"p99 {_percentile(scraped[name], 0.99) * 1000:.1f} ms; GET /r/1 p50 "
                      f"{_percentile(floor[name], 0.5) * 1000:.1f} ms, p99 {_percentile(floor[name], 0.99) * 1000:.1f} ms")
            for label, ratios in (("p50", p50s), ("p99", p99s)):
                print(f"  B / A {label} within a round: median {statistics.median(ratios):.3f} "
                      f"(min {min(ratios):.3f}, max {max(ratios):.3f})")
            sys.stdout.flush()
    finally:
        for srv in servers.values():
            srv.stop()
            shutil.rmtree(srv.project.parent, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
