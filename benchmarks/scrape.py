"""/metrics scrape cost in one process: the stack's scrape (``server.metric_scrape.DirectoryScraper``, what a
worker's /metrics runs) against prometheus_client's own collector, and against the number of workers that ever
lived (each dead worker folded by ``server.metric_files``, or left for prometheus_client's collector to read again).

    .venv/bin/python benchmarks/scrape.py [--dead 40] [--routes 100] [--rounds 15]

With no server: the metric files of 4 live workers and ``--dead`` dead ones, each having counted ``--routes``
routes x 2 statuses (counter) and their durations (histogram), as the stack's ``HttpMetrics`` names them. Prints
the median time of one scrape (files read and merged + text exposition, milliseconds) for: the stack's scrape of
the 4 live workers (the baseline; the scraper made once, as a worker keeps it); its first scrape (a worker's
first, every key parsed); prometheus_client's ``MultiProcessCollector`` + ``generate_latest`` on the same files;
the same plus the dead workers' files, unfolded; the stack's scrape after folding them. Ratios are against the
baseline of the same run, so the machine's speed cancels out. Targets: folded / baseline <= 1.25 (a scrape does not
grow with the workers that ever lived); prometheus_client / baseline >= 10 (what the scraper is for). The
``/metrics`` latency under load through a real server is ``benchmarks/run.py``'s.
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
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "image" / "project"))

FAKE_PID = 4_194_304  # above Linux's largest pid_max: no such process exists, so the fold never skips one
LIVE = 4


def write_workers(directory: str, pids: list[int], routes: int) -> None:
    """Write the counter and histogram files of workers ``pids`` into ``directory`` (prometheus_client's
    multiprocess value class pointed at each pid in turn)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, values

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # where prometheus_client's values make their files
    for pid in pids:
        values.ValueClass = values.MultiProcessValue(lambda pid=pid: pid)
        registry = CollectorRegistry()
        requests = Counter("http_requests", "h", ["method", "endpoint", "status"], registry=registry)
        duration = Histogram("http_request_duration_seconds", "h", ["method", "endpoint"], registry=registry)
        for route in range(routes):
            for status in ("200", "404"):
                requests.labels("GET", f"/r{route}", status).inc()
            duration.labels("GET", f"/r{route}").observe(0.01)


def paired(scrapes: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each of ``scrapes`` per round: every scrape once per round, in an order reversed every other
    round, so a slow spell of a shared machine hits all of a round alike."""
    times: dict[str, list[float]] = {name: [] for name in scrapes}
    for index in range(rounds):
        for name in (list(scrapes) if index % 2 == 0 else list(scrapes)[::-1]):
            started = time.perf_counter()
            scrapes[name]()
            times[name].append(time.perf_counter() - started)
    return times


def ratio(times: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of ``name``'s time over ``baseline``'s in the same round."""
    return statistics.median(a / b for a, b in zip(times[name], times[baseline]))


def main() -> int:
    """Run the cases and print the table; exit 1 when a ratio misses its target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dead", type=int, default=40)
    parser.add_argument("--routes", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    live_dir, dead_dir = tempfile.mkdtemp(prefix="bench-scrape-"), tempfile.mkdtemp(prefix="bench-scrape-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = live_dir
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest
    from prometheus_client.multiprocess import MultiProcessCollector

    from server.metric_files import fold_dead_worker
    from server.metric_scrape import DirectoryScraper

    def client(directory: str) -> Callable[[], bytes]:
        def scrape() -> bytes:
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=directory)
            return generate_latest(registry)
        return scrape

    try:
        live = [os.getpid() + i for i in range(LIVE)]
        dead = [FAKE_PID + i for i in range(args.dead)]
        write_workers(live_dir, live, args.routes)
        write_workers(dead_dir, live + dead, args.routes)
        stack_live, stack_dead = DirectoryScraper(live_dir), DirectoryScraper(dead_dir)
        before = paired({
            "stack": lambda: stack_live.expose(generate_latest),
            "first": lambda: DirectoryScraper(live_dir).expose(generate_latest),
            "client": client(live_dir),
            "unfolded": client(dead_dir),
        }, args.rounds)
        started = time.perf_counter()
        for pid in dead:
            fold_dead_worker(dead_dir, pid)
        fold = (time.perf_counter() - started) / max(args.dead, 1)
        stack_dead.expose(generate_latest)  # its first scrape parses the folded files
        after = paired({
            "stack": lambda: stack_live.expose(generate_latest),
            "folded": lambda: stack_dead.expose(generate_latest),
        }, args.rounds)
        body = stack_live.expose(generate_latest)
    finally:
        shutil.rmtree(live_dir, ignore_errors=True)
        shutil.rmtree(dead_dir, ignore_errors=True)
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    ms = {name: statistics.median(times) * 1000 for name, times in {**before, **after}.items()}
    ms["stack"] = statistics.median(before["stack"]) * 1000
    client_ratio, folded_ratio = ratio(before, "client", "stack"), ratio(after, "folded", "stack")
    print(f"scrape, {LIVE} live workers x {args.routes} routes ({samples} samples, {len(body)} bytes), median of "
          f"{args.rounds} paired rounds: {ms['stack']:.2f} ms (baseline: the stack's scraper)")
    print(f"  the scraper's first scrape (every key parsed): {ms['first']:.1f} ms "
          f"({ratio(before, 'first', 'stack'):.1f}x)")
    print(f"  prometheus_client's collector + generate_latest: {ms['client']:.1f} ms ({client_ratio:.1f}x, "
          f"target >= 10x)")
    print(f"  + {args.dead} dead workers, prometheus_client's collector: {ms['unfolded']:.1f} ms "
          f"({ratio(before, 'unfolded', 'stack'):.1f}x)")
    print(f"  + {args.dead} dead workers, folded, the stack's scraper: {ms['folded']:.2f} ms "
          f"({folded_ratio:.2f}x, target <= 1.25x); one fold {fold * 1000:.1f} ms")
    return 0 if folded_ratio <= 1.25 and client_ratio >= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
