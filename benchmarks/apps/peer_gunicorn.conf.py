"""gunicorn config of the hand-made peer (prometheus_flask_exporter's documented multiprocess setup): 3 workers x 4
threads (gthread), metrics on their own port (PEER_METRICS_PORT), dead workers' files cleaned in ``child_exit``."""

import os

from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

bind = f"127.0.0.1:{os.environ['PORT']}"
workers = 3
threads = 4
worker_class = "gthread"


def when_ready(server):
    GunicornPrometheusMetrics.start_http_server_when_ready(int(os.environ["PEER_METRICS_PORT"]))


def child_exit(server, worker):
    GunicornPrometheusMetrics.mark_process_dead_on_child_exit(worker.pid)
