"""CPU instructions per /hello request of the WSGI app alone: the stack against bare Flask, counted by callgrind.

    .venv/bin/python benchmarks/instructions.py [--parts]

Instruction counts do not depend on what else the machine is doing, so this splits the stack's own per-request
work where wall-clock benchmarks (``run.py``) are too noisy to. Each variant calls the WSGI app in-process (no
server, no sockets) under ``valgrind --tool=callgrind`` (Debian package valgrind) twice, for 500 and for 2,500
requests after a 2,000-request warm-up; the difference divided by 2,000 is the count per request, start-up
excluded. ``bare`` (the baseline) is bare Flask serving the template's Blueprint, as the stack does;
``stack-serving`` is the app the production servers serve (``serving.worker.production_app``: the stack plus the
serving layer's body check and drain header). ``--parts`` adds the stack with one part switched off at a time
(metrics, access line, request id, the whole middleware), to show what each costs, and ``bare-routes``: bare
Flask with /hello on the app itself, no Blueprint. Kernel work (system calls) is not counted. Takes 2-4 minutes.

After the warm-up the heap built so far (the app, its imports) is moved out of the garbage collector's reach
(``gc.collect(); gc.freeze()``), in every variant alike: otherwise a full collection of it, millions of
instructions that come every few thousand requests, falls inside one variant's measured window and not another's
(seen: +-5,000 instructions per request between runs of the same code).
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WARM_UP = 2000
#: Requests per batch of metric writes and access lines (``server.request_batch``): the benchmark flushes every
#: BATCH requests instead of the batch thread's 0.05 s timer, which under valgrind (50-100x slower) would make the
#: batch size, and the count per request, depend on how fast valgrind ran (seen: +-10,000 per request). 50 is
#: fewer than a worker gathers in 0.05 s under the load of ``run.py`` (1,500-3,000 req/s per worker).
BATCH = 50
VARIANTS = ["bare", "stack", "stack-serving"]  # stack-serving: what production servers serve (serving.worker)
PARTS = ["stack-no-metrics", "stack-no-access-line", "stack-no-request-id", "stack-no-middleware", "bare-routes"]


def child(variant: str, requests: int) -> None:
    """Build the app for ``variant`` and call it ``WARM_UP + requests`` times (runs under callgrind)."""
    if variant == "bare":
        sys.path.insert(0, str(REPO / "benchmarks" / "apps"))
        from bare_flask import app
    elif variant == "bare-routes":  # the view on the app itself, no Blueprint: Flask's Blueprint dispatch left out
        from flask import Flask

        app = Flask("bare_routes")
        app.get("/hello")(lambda: ("Hello from Appsody!", 200, {"Content-Type": "text/plain; charset=utf-8"}))
    else:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-instr-")
        os.environ["STACK_USERAPP_DIR"] = str(REPO / "templates" / "simple")
        os.environ["STACK_LOG_FLUSH_SECONDS"] = "0.25"  # as under serve
        sys.path.insert(0, str(REPO / "image" / "project"))
        sys.stdout = open(os.devnull, "w")  # the access lines
        import server.observe as observe
        from server import request_batch
        from server.factory import create_app
        from server.metrics import HttpMetrics

        if variant == "stack-no-metrics":
            HttpMetrics.record = lambda *args: None
        elif variant == "stack-no-access-line":
            observe.log_access_records = lambda *args: None
        elif variant == "stack-no-request-id":
            observe.new_request_id = observe._next_ready_id = lambda: "0123456789abcdef0123456789abcdef"
        request_batch.RequestBatch._run = lambda self: None  # no timed batches: ``serve`` flushes every BATCH
        if variant == "stack-serving":
            from serving.worker import production_app

            app = production_app()
        else:
            app = create_app()
        if variant == "stack-no-middleware":
            app.wsgi_app = app.wsgi_app.app
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(path="/hello", headers={"Host": "127.0.0.1:8080", "User-Agent": "wrk"}).get_environ()

    def start_response(status, headers, exc_info=None):
        return None

    flush = None if variant.startswith("bare") else request_batch.flush_pending_requests

    def serve(count: int) -> None:
        for n in range(1, count + 1):
            body = app(dict(environ), start_response)
            for _chunk in body:
                pass
            body.close()
            if flush is not None and n % BATCH == 0:
                flush()

    serve(WARM_UP)
    gc.collect()
    gc.freeze()  # see the module docstring
    serve(requests)


def count(variant: str, requests: int) -> int:
    """Instructions callgrind counts for one child run."""
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", sys.executable, __file__,
             "--child", variant, str(requests)],
            capture_output=True, text=True, env=dict(os.environ, PYTHONHASHSEED="0"), timeout=1800,
        )
    match = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or not match:
        raise RuntimeError(f"{variant}: callgrind failed: {done.stderr.strip()[-500:]}")
    return int(match.group(1))


def per_request(variant: str) -> int:
    """Instructions per request of ``variant`` (difference of a 2,500- and a 500-request run)."""
    return (count(variant, 2500) - count(variant, 500)) // 2000


def main(argv: list[str] | None = None) -> int:
    """Print instructions per request for each variant and its ratio to bare Flask; 1 when valgrind is missing."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", action="store_true", help="also the stack with one part off at a time")
    parser.add_argument("--only", nargs="+", choices=VARIANTS + PARTS, help="just these variants (bare is always run)")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "REQUESTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], int(args.child[1]))
        return 0
    if not shutil.which("valgrind"):
        print("benchmarks/instructions.py: valgrind is not installed (apt-get install valgrind)", file=sys.stderr)
        return 1
    variants = (["bare"] + [v for v in args.only if v != "bare"] if args.only else VARIANTS) + (PARTS if args.parts else [])
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = dict(zip(variants, pool.map(per_request, variants)))
    bare = results["bare"]
    print(f"{'variant':24s}  {'instructions/request':>20s}  {'vs bare':>7s}  {'vs stack':>8s}")
    for variant, value in results.items():
        print(f"{variant:24s}  {value:>20,d}  {value / bare:>7.3f}  {value - results['stack']:>+8,d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
