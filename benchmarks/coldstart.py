"""Cold start to ready, the stack vs the bare server, in paired rounds (issue 19's target: at most 1.25x).

    .venv/bin/python benchmarks/coldstart.py [--rounds N] [--servers gunicorn,granian,uwsgi]

Each round starts, for every server, the stack (the simple template, ``serve``, ready = first 200 from
/health/ready) and the bare Flask app on the same server and settings (ready = first 200 from /hello), one after the
other, the order swapped every other round; a round's ratio is stack / bare of that round, so a slow spell of a
shared machine hits both sides alike. Prints per server the median seconds of each and the median ratio with its
interquartile range.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

from .procs import TEMPLATE, Server, copy_project  # noqa: E402

TARGET = 1.25  # stack / bare, at most
SERVERS = ("gunicorn", "granian", "uwsgi")


def ready_after(kind: str) -> float:
    """Seconds from launch to the first 200 of ``kind``'s ready path (``procs.Server.start``)."""
    project = copy_project(TEMPLATE) if kind.startswith("stack") else None
    srv = Server(kind, project=project)
    try:
        srv.start()
        return srv.ready_after
    finally:
        srv.stop()
        if project:
            shutil.rmtree(project.parent, ignore_errors=True)


def paired_cold_start(rounds: int, servers=SERVERS) -> dict:
    """``{server: {"stack": [s...], "bare": [s...], "ratios": [...]}}`` over ``rounds`` paired rounds."""
    res = {name: {"stack": [], "bare": [], "ratios": []} for name in servers}
    for n in range(rounds):
        for name in servers:
            order = ("stack", "bare") if n % 2 == 0 else ("bare", "stack")
            got = {side: ready_after(f"{side}-{name}") for side in order}
            for side, seconds in got.items():
                res[name][side].append(seconds)
            res[name]["ratios"].append(got["stack"] / got["bare"])
    return res


def summary(res: dict) -> str:
    """One line per server: medians, the median ratio, its interquartile range, the target."""
    lines = []
    for name, r in res.items():
        ratios = r["ratios"]
        q1, q3 = (statistics.quantiles(ratios, n=4, method="inclusive")[i] for i in (0, 2)) if len(ratios) > 1 \
            else (float("nan"), float("nan"))
        lines.append(f"{name:9s} stack {statistics.median(r['stack']):.3f} s  bare {statistics.median(r['bare']):.3f} s"
                     f"  ratio {statistics.median(ratios):.2f} (IQR {q1:.2f}-{q3:.2f}, n={len(ratios)})"
                     f"  target <= {TARGET}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--servers", default=",".join(SERVERS))
    args = parser.parse_args(argv)
    print(summary(paired_cold_start(args.rounds, tuple(args.servers.split(",")))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
