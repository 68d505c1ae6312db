"""/metrics scrape cost against the number of workers that ever lived: prometheus_client's own collector (every
dead worker's files read again) against the stack's, where each dead worker is folded (``server.metric_files``).

    .venv/bin/python benchmarks/scrape.py [--dead 40] [--routes 100] [--rounds 15]

In one process, with no server: the metric files of 4 live workers and ``--dead`` dead ones, each having counted
``--routes`` routes x 2 statuses (counter) and their durations (histogram), as the stack's ``HttpMetrics`` names
them. Prints the median time of one scrape (collect + text exposition, seconds) for: 4 live workers only (the
baseline); the same plus the dead workers' files read as prometheus_client's ``MultiProcessCollector`` reads them;
the same after folding them. Ratios are against the baseline of the same run, so the machine's speed cancels out.
Target: folded / baseline <= 1.25 (a scrape does not grow with the workers that ever lived).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "image" / "project"))

FAKE_PID = 4_194_304  # above Linux's largest pid_max: no such process exists, so the fold never skips one
LIVE = 4


def write_workers(directory: str, pids: list[int], routes: int) -> None:
    """Write the counter and histogram files of workers ``pids`` into ``directory`` (prometheus_client's
    multiprocess value class pointed at each pid in turn)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, values

    for pid in pids:
        values.ValueClass = values.MultiProcessValue(lambda pid=pid: pid)
        registry = CollectorRegistry()
        requests = Counter("http_requests", "h", ["method", "endpoint", "status"], registry=registry)
        duration = Histogram("http_request_duration_seconds", "h", ["method", "endpoint"], registry=registry)
        for route in range(routes):
            for status in ("200", "404"):
                requests.labels("GET", f"/r{route}", status).inc()
            duration.labels("GET", f"/r{route}").observe(0.01)


def scrape_seconds(collector: object, rounds: int) -> float:
    """Median seconds of ``collect`` + text exposition over ``rounds`` scrapes."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest

    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        registry = CollectorRegistry()
        registry.register(collector)
        generate_latest(registry)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    """Run the three cases and print the table; exit 1 when the folded scrape misses its target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dead", type=int, default=40)
    parser.add_argument("--routes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    directory = tempfile.mkdtemp(prefix="bench-scrape-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    from prometheus_client.multiprocess import MultiProcessCollector

    from server.metric_files import DirectoryCollector, fold_dead_worker

    try:
        live = [os.getpid() + i for i in range(LIVE)]
        write_workers(directory, live, args.routes)
        baseline = scrape_seconds(DirectoryCollector(directory), args.rounds)
        dead = [FAKE_PID + i for i in range(args.dead)]
        write_workers(directory, dead, args.routes)
        unfolded = scrape_seconds(MultiProcessCollector(None, path=directory), args.rounds)
        started = time.perf_counter()
        for pid in dead:
            fold_dead_worker(directory, pid)
        fold = (time.perf_counter() - started) / max(args.dead, 1)
        folded = scrape_seconds(DirectoryCollector(directory), args.rounds)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(f"scrape, {LIVE} live workers x {args.routes} routes: {baseline * 1000:.1f} ms (baseline)")
    print(f"  + {args.dead} dead workers, prometheus_client's collector: {unfolded * 1000:.1f} ms "
          f"({unfolded / baseline:.2f}x)")
    print(f"  + {args.dead} dead workers, folded: {folded * 1000:.1f} ms ({folded / baseline:.2f}x, target <= 1.25x);"
          f" one fold {fold * 1000:.1f} ms")
    return 0 if folded / baseline <= 1.25 else 1


if __name__ == "__main__":
    sys.exit(main())
