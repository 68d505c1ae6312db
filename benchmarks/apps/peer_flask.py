"""The peer a user would assemble by hand instead of the stack: Flask with prometheus_flask_exporter in multiprocess
mode (its documented gunicorn setup, ``peer_gunicorn.conf.py``), the template's /hello, nothing else."""

from flask import Flask
from prometheus_flask_exporter.multiprocess import GunicornPrometheusMetrics

app = Flask(__name__)
metrics = GunicornPrometheusMetrics(app)  # per request: a histogram by method, path and status, in the mmap files


@app.get("/hello")
def hello():
    """Same body and content type as the `simple` template's /hello."""
    return "Hello from Appsody!", 200, {"Content-Type": "text/plain; charset=utf-8"}
