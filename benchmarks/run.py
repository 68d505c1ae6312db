"""Benchmarks of the python-flask stack against baselines this script starts itself; prints one table.

    .venv/bin/python benchmarks/run.py [--quick] [--json PATH] [--image TAG] [--no-container]

All figures come from the same run, on 127.0.0.1, with wrk (Debian package) as the load generator:

* /hello throughput and p50/p99 latency: the full stack vs a bare Flask app on the same server, config and
  worker count (targets: req/s >= 0.95 of bare, server CPU per request <= 1.05x), vs ``python -m flask run`` (how
  the original Appsody stack served), gunicorn vs granian vs uWSGI (all with the stack's settings; bare Flask on
  uWSGI runs its http router and workers as uwsgi_app.py does), and vs the peer a user
  would assemble by hand: Flask + prometheus_flask_exporter (multiprocess) on gunicorn, 3 workers x 4 threads
  (target: the stack faster), and the deployable image's default (nginx in front of granian) vs granian alone
  and vs that peer.
* /metrics scrape latency with 4 workers and a 100-route app (multiprocess mode), idle and under wrk load on the
  routes (target: p99 <= 25 ms under load), beside a plain request's latency under the same load.
* cold start: launch -> first 200 from /health/ready (bare app: from /hello), the stack against bare Flask on
  each server in paired rounds (``coldstart.py``; target <= 1.25).
* hot reload: save -> first response of the new code, through the local dev loop (target p50 < 0.5 s) and,
  when podman works, the dev container (``flask-stack run --engine podman``).
* memory per worker (PSS and RSS, after load) vs the bare Flask app.
* deployable image size over its base (``--image TAG``, else built with ``flask-stack build`` when podman
  works, else n/a).

``--quick`` shortens every phase (about 1.5 minutes instead of about 8; no container phases).
The throughput phase runs every server at once and measures them in turn, round after round (order reversed every
other round); each ratio is the median of the ratios within a round, printed with their interquartile range, so a
slow spell of a shared machine (seen here: a server's req/s halving for tens of seconds) hits both sides of a ratio
alike. Server CPU time per request (workers' and master's utime + stime from /proc; for uWSGI also its http router
and the stack's supervisor) is reported beside req/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

from .procs import APPS, BIN, TEMPLATE, Server, copy_project, cpu_seconds, get, memory, wrk  # noqa: E402
from .coldstart import TARGET as COLD_TARGET, paired_cold_start, ready_after  # noqa: E402
from .reload import container_reload, local_reload  # noqa: E402

KINDS = ["stack-gunicorn", "bare-gunicorn", "stack-granian", "bare-granian", "stack-uwsgi", "bare-uwsgi",
         "stack-granian-front",
         "stack-flask-run", "peer-gunicorn"]


def _median(values):
    values = [v for v in values if v == v]  # drop NaN
    return statistics.median(values) if values else float("nan")


def _quartiles(values: list[float]) -> tuple[float, float]:
    """First and third quartile (the interquartile range) of ``values``; (nan, nan) for fewer than two."""
    if len(values) < 2:
        return float("nan"), float("nan")
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def throughput(rounds: int, seconds: int, connections: int) -> dict:
    """/hello under wrk for every kind, in paired rounds.

    All servers run at once (idle while another is measured). Each round measures every server once, for
    ``seconds``, in an order reversed every other round, so a slow spell of a shared machine hits the servers of
    one round alike and a drift cancels. A comparison's ratio is the median over rounds of the ratio within each
    round (with its interquartile range), not a ratio of two separately chosen rounds. Per kind: median req/s,
    p50, p99 and server CPU per request (workers' and master's utime + stime from /proc) over rounds; wrk errors
    summed over all rounds; memory per worker (PSS, RSS) after the last round.
    """
    servers = {}
    projects = []
    try:
        for kind in KINDS:
            project = copy_project(TEMPLATE) if kind.startswith("stack") else None
            if project:
                projects.append(project)
            servers[kind] = Server(kind, project=project).start()
        for srv in servers.values():
            srv.wait_workers(1)
        time.sleep(0.5)
        for srv in servers.values():
            wrk(srv.port, "/hello", max(1, seconds // 2), connections)  # warm-up
        runs = {kind: [] for kind in KINDS}
        for index in range(rounds):
            for kind in (KINDS if index % 2 == 0 else KINDS[::-1]):
                srv = servers[kind]
                pids = srv.cpu_pids()
                cpu_before = cpu_seconds(pids)
                run = wrk(srv.port, "/hello", seconds, connections)
                run["cpu_per_request"] = (cpu_seconds(pids) - cpu_before) / max(1, run["requests"])
                runs[kind].append(run)
        result = {}
        for kind, srv in servers.items():
            pids = srv.worker_pids()
            result[kind] = {
                key: _median([r[key] for r in runs[kind]]) for key in ("rps", "p50", "p99", "cpu_per_request")
            }
            result[kind].update({
                "rounds": runs[kind],
                "errors": sum(r["errors"] for r in runs[kind]),
                "workers": len(pids),
                **{key: sum(memory(pid)[key] for pid in pids) / max(1, len(pids)) for key in ("pss", "rss")},
            })
        return result
    finally:
        for srv in servers.values():
            srv.stop()
        for project in projects:
            shutil.rmtree(project.parent, ignore_errors=True)


def paired(tp: dict, kind: str, baseline: str, key: str) -> tuple[float, float, float]:
    """(median, first quartile, third quartile) over rounds of ``kind``'s ``key`` divided by ``baseline``'s in
    the same round."""
    ratios = [a[key] / b[key] for a, b in zip(tp[kind]["rounds"], tp[baseline]["rounds"]) if b[key]]
    return (_median(ratios), *_quartiles(ratios))


ROUTES_LUA = """
-- each request: the next of the 100 routes (/r/0 .. /r/99)
n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/r/" .. (n % 100))
end
"""
SCRAPE_WARM_UP = 40  # scrapes before measuring: a worker's first scrape parses every key (server.metric_scrape)


def metrics_scrape(scrapes: int, load_seconds: int) -> dict:
    """Scrape latency of /metrics: 4 gunicorn workers, 100 routes each requested, multiprocess mode, every scrape
    on a fresh connection after ``SCRAPE_WARM_UP`` unmeasured ones (each of the 4 workers has then served one).
    Idle: ``scrapes`` in a row. Under load: wrk on the 100 routes (16 connections, for ``load_seconds``) while
    up to ``scrapes`` scrapes run 20 ms apart, each followed by GET /r/1 on a fresh connection (what any request
    waits for there: the floor of a scrape's latency under that load)."""
    project = copy_project(APPS / "routes100")
    try:
        with Server("stack-gunicorn", project=project, workers=4) as srv:
            srv.wait_workers(4)
            with ThreadPoolExecutor(max_workers=8) as pool:  # fresh connections: every worker sees routes
                list(pool.map(lambda i: get(srv.port, f"/r/{i % 100}"), range(800)))

            def timed(path: str) -> tuple[float, bytes]:
                began = time.monotonic()
                status, body = get(srv.port, path, timeout=30)
                assert status == 200, (path, status)
                return time.monotonic() - began, body

            for _ in range(SCRAPE_WARM_UP):
                timed("/metrics")
            idle = [timed("/metrics")[0] for _ in range(scrapes)]
            script = srv.workdir / "routes.lua"
            script.write_text(ROUTES_LUA)
            load: dict = {}
            loader = threading.Thread(target=lambda: load.update(wrk(srv.port, "/", load_seconds, 16, 2, script)))
            loader.start()
            time.sleep(1.0)
            loaded, floor, body = [], [], b""
            while loader.is_alive() and len(loaded) < scrapes:
                seconds, body = timed("/metrics")
                loaded.append(seconds)
                time.sleep(0.02)
                floor.append(timed("/r/1")[0])
            loader.join()
            lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
            return {
                "p50": _percentile(idle, 0.5), "p99": _percentile(idle, 0.99),
                "load_p50": _percentile(loaded, 0.5), "load_p99": _percentile(loaded, 0.99),
                "floor_p50": _percentile(floor, 0.5), "floor_p99": _percentile(floor, 0.99),
                "load_scrapes": len(loaded), "load_rps": load.get("rps", float("nan")),
                "load_errors": load.get("errors", 0),
                "samples": len(lines),
                "bytes": len(body),
                "files": len(list((srv.workdir / "metrics").glob("*.db"))),
            }
    finally:
        shutil.rmtree(project.parent, ignore_errors=True)


def _percentile(values: list[float], fraction: float) -> float:
    """The value at ``fraction`` (0.5, 0.99) of ``values`` sorted; nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def cold_start(runs: int) -> dict:
    """Cold start to ready: per server, the stack against bare Flask in paired rounds (``coldstart.py``), plus
    ``flask run`` with the stack's app; medians in seconds, each server's ratios per round."""
    res = paired_cold_start(runs)
    flask_run = []
    for _ in range(runs):
        flask_run.append(ready_after("stack-flask-run"))
    res["flask-run"] = {"stack": flask_run}
    return res


def image_size(tag: str | None) -> dict | str:
    """Deployable image size and its base's (bytes); builds one from the template when no tag is given."""
    if not shutil.which("podman") or subprocess.run(["podman", "info"], capture_output=True).returncode != 0:
        return "n/a (no working podman)"
    base = os.environ.get("STACK_BASE_IMAGE", "localhost/debian-python3:bookworm")
    built = None
    if not tag:
        project = copy_project(TEMPLATE)
        built = tag = "localhost/flask-stack-bench:latest"
        done = subprocess.run([str(BIN / "flask-stack"), "build", "--engine", "podman", "--project", str(project),
                               "-t", tag, "--base-image", base], capture_output=True, text=True, timeout=1200)
        shutil.rmtree(project.parent, ignore_errors=True)
        if done.returncode != 0:
            return "n/a (build failed: " + (done.stderr or done.stdout).strip().splitlines()[-1][:100] + ")"

    def size(ref: str) -> int:
        out = subprocess.run(["podman", "image", "inspect", ref, "--format", "{{.Size}}"], capture_output=True,
                             text=True, check=True)
        return int(out.stdout.strip())

    try:
        return {"image": size(tag), "base": size(base), "tag": tag, "base_tag": base}
    finally:
        if built:
            subprocess.run(["podman", "rmi", "-f", built], capture_output=True)


# --- report ---------------------------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us"


def _mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def table(res: dict) -> str:
    """The results as a fixed-width text table: metric, stack, baseline, ratio, target, and the interquartile range
    of the per-round ratios (throughput rows)."""
    rows = [("metric", "stack", "baseline", "ratio", "target", "rounds IQR")]
    tp = res["throughput"]

    def compare(label, kind, baseline, key, fmt, target=""):
        median, q1, q3 = paired(tp, kind, baseline, key)
        return (label, fmt(tp[kind][key]), fmt(tp[baseline][key]), f"{median:.2f}", target, f"{q1:.2f}-{q3:.2f}")

    rps = "{:.0f}".format
    rows += [
        compare("/hello req/s: stack vs bare Flask (gunicorn)", "stack-gunicorn", "bare-gunicorn", "rps", rps,
                ">= 0.95"),
        compare("/hello req/s: stack vs bare Flask (granian)", "stack-granian", "bare-granian", "rps", rps,
                ">= 0.95"),
        compare("/hello server CPU/request: stack vs bare (gunicorn)", "stack-gunicorn", "bare-gunicorn",
                "cpu_per_request", _us, "<= 1.05"),
        compare("/hello server CPU/request: stack vs bare (granian)", "stack-granian", "bare-granian",
                "cpu_per_request", _us, "<= 1.05"),
        compare("/hello req/s: stack vs bare Flask (uWSGI)", "stack-uwsgi", "bare-uwsgi", "rps", rps, ">= 0.95"),
        compare("/hello server CPU/request: stack vs bare (uWSGI)", "stack-uwsgi", "bare-uwsgi", "cpu_per_request",
                _us, "<= 1.05"),
        compare("/hello req/s: stack (gunicorn) vs prometheus_flask_exporter", "stack-gunicorn", "peer-gunicorn",
                "rps", rps, "> 1"),
        compare("/hello req/s: stack (granian) vs prometheus_flask_exporter", "stack-granian", "peer-gunicorn",
                "rps", rps, "> 1"),
        compare("/hello req/s: stack (uWSGI) vs prometheus_flask_exporter", "stack-uwsgi", "peer-gunicorn", "rps",
                rps, "> 1"),
        compare("/hello req/s: image default (nginx + granian) vs prometheus_flask_exporter", "stack-granian-front",
                "peer-gunicorn", "rps", rps, "> 1"),
        compare("/hello req/s: nginx front vs granian alone (stack)", "stack-granian-front", "stack-granian", "rps",
                rps, ">= 0.85"),
        compare("/hello server CPU/request: nginx front vs granian alone (stack)", "stack-granian-front",
                "stack-granian", "cpu_per_request", _us),
        compare("/hello p99: nginx front vs granian alone (stack)", "stack-granian-front", "stack-granian", "p99",
                _ms),
        compare("/hello server CPU/request: stack (gunicorn) vs peer", "stack-gunicorn", "peer-gunicorn",
                "cpu_per_request", _us),
        compare("/hello p50: stack vs bare (gunicorn)", "stack-gunicorn", "bare-gunicorn", "p50", _ms),
        compare("/hello p99: stack vs bare (gunicorn)", "stack-gunicorn", "bare-gunicorn", "p99", _ms),
        compare("/hello p99: stack vs bare (granian)", "stack-granian", "bare-granian", "p99", _ms),
        compare("/hello req/s: gunicorn stack vs `flask run`", "stack-gunicorn", "stack-flask-run", "rps", rps, "> 1"),
        compare("/hello p99: gunicorn stack vs `flask run`", "stack-gunicorn", "stack-flask-run", "p99", _ms, "< 1"),
        compare("/hello req/s: granian vs gunicorn (stack)", "stack-granian", "stack-gunicorn", "rps", rps),
        compare("/hello p99: granian vs gunicorn (stack)", "stack-granian", "stack-gunicorn", "p99", _ms),
        compare("/hello req/s: uWSGI vs gunicorn (stack)", "stack-uwsgi", "stack-gunicorn", "rps", rps),
        compare("/hello req/s: uWSGI vs granian (stack)", "stack-uwsgi", "stack-granian", "rps", rps),
        compare("/hello p99: uWSGI vs granian (stack)", "stack-uwsgi", "stack-granian", "p99", _ms),
        compare("/hello server CPU/request: uWSGI vs granian (stack)", "stack-uwsgi", "stack-granian",
                "cpu_per_request", _us),
    ]
    sg, bg, gr, uw = tp["stack-gunicorn"], tp["bare-gunicorn"], tp["stack-granian"], tp["stack-uwsgi"]
    rows += [
        ("memory/worker PSS: stack vs bare (gunicorn)", _mib(sg["pss"]), _mib(bg["pss"]),
         f"{sg['pss'] / bg['pss']:.2f}", "", ""),
        ("memory/worker RSS: stack vs bare (gunicorn)", _mib(sg["rss"]), _mib(bg["rss"]),
         f"{sg['rss'] / bg['rss']:.2f}", "", ""),
        ("memory/worker PSS: granian vs gunicorn (stack)", _mib(gr["pss"]), _mib(sg["pss"]),
         f"{gr['pss'] / sg['pss']:.2f}", "", ""),
        ("memory/worker PSS: uWSGI vs gunicorn (stack)", _mib(uw["pss"]), _mib(sg["pss"]),
         f"{uw['pss'] / sg['pss']:.2f}", "", ""),
    ]
    ms = res["metrics"]
    rows.append(("/metrics scrape p50 (4 workers, 100 routes)", _ms(ms["p50"]), "", "",
                 f"{ms['samples']} samples"))
    rows.append(("/metrics scrape p99 (4 workers, 100 routes)", _ms(ms["p99"]), "", "", f"{ms['bytes']} bytes"))
    rows.append(("/metrics scrape p50 under load vs GET /r/1", _ms(ms["load_p50"]), _ms(ms["floor_p50"]), "", "",
                 f"wrk 16 connections on the routes, {ms['load_rps']:.0f} req/s"))
    rows.append(("/metrics scrape p99 under load vs GET /r/1", _ms(ms["load_p99"]), _ms(ms["floor_p99"]), "",
                 "<= 25 ms", f"{ms['load_scrapes']} scrapes"))
    cs = res["cold_start"]
    for name, label in (("gunicorn", "gunicorn"), ("granian", "granian"), ("uwsgi", "uWSGI")):
        r = cs[name]
        q1, q3 = _quartiles(r["ratios"])
        rows.append((f"cold start -> ready: stack vs bare ({label})", f"{_median(r['stack']):.2f} s",
                     f"{_median(r['bare']):.2f} s", f"{_median(r['ratios']):.2f}", f"<= {COLD_TARGET}",
                     f"{q1:.2f}-{q3:.2f}"))
    rows.append(("cold start -> ready: `flask run` (stack app)", f"{_median(cs['flask-run']['stack']):.2f} s", "",
                 "", ""))
    for label, key in (("hot reload p50: local dev loop", "reload_local"), ("hot reload p50: dev container",
                                                                              "reload_container")):
        value = res.get(key)
        if isinstance(value, dict):
            rows.append((label, f"{value['p50']:.3f} s", "", "", f"< 0.5 s (max {value['max']:.3f} s, n={value['n']})"))
        else:
            rows.append((label, str(value), "", "", "< 0.5 s"))
    img = res.get("image")
    if isinstance(img, dict):
        rows.append(("deployable image over its base", _mib(img["image"] - img["base"]), _mib(img["base"]), "",
                     img["base_tag"]))
    else:
        rows.append(("deployable image over its base", str(img), "", "", ""))
    errors = sum(v["errors"] for v in tp.values()) + res["metrics"].get("load_errors", 0)
    rows.append(("wrk errors (all servers, all rounds, the scrape load)", str(errors), "", "", "0"))
    rows = [row + ("",) * (6 - len(row)) for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(6)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every phase, print the table (and write JSON with --json); return 0, or 1 when a phase failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases, no container phases")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--image", help="deployable image to measure (default: build one when podman works)")
    parser.add_argument("--no-container", action="store_true", help="skip the podman phases")
    args = parser.parse_args(argv)
    quick = args.quick
    if not shutil.which("wrk"):
        print("benchmarks/run.py: wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 1
    began = time.monotonic()
    res: dict = {"quick": quick, "cpus": os.cpu_count(), "python": platform.python_version(),
                 "load_average_at_start": os.getloadavg()}
    phases = [
        ("throughput", lambda: throughput(3 if quick else 10, 2 if quick else 4, 32)),
        ("metrics", lambda: metrics_scrape(50 if quick else 200, 10 if quick else 30)),
        ("cold_start", lambda: cold_start(1 if quick else 5)),
        ("reload_local", lambda: local_reload(5 if quick else 15)),
    ]
    if quick or args.no_container:
        res["reload_container"] = res["image"] = "n/a (--quick / --no-container)"
    else:
        phases += [("reload_container", lambda: container_reload(10)), ("image", lambda: image_size(args.image))]
    for name, phase in phases:
        print(f"benchmarks: {name} ...", file=sys.stderr, flush=True)
        try:
            res[name] = phase()
        except Exception as exc:  # report and stop: a partial table would mix runs
            print(f"benchmarks/run.py: phase {name} failed: {exc}", file=sys.stderr)
            return 1
    res["seconds"] = round(time.monotonic() - began, 1)
    print(table(res))
    print(f"\n{res['cpus']} CPUs, Python {res['python']}, load average at start "
          f"{res['load_average_at_start'][0]:.2f}, {res['seconds']} s; worker counts: "
          + ", ".join(f"{k} {v['workers']}" for k, v in res["throughput"].items())
          + f"; throughput: {len(res['throughput']['stack-gunicorn']['rounds'])} rounds of wrk, 32 connections")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
