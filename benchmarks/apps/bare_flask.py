"""The baseline: a bare Flask app with the template's /hello and nothing else (no health, metrics, docs, logs)."""

from flask import Flask

app = Flask(__name__)


@app.get("/hello")
def hello():
    """Same body and content type as the `simple` template's /hello."""
    return "Hello from Appsody!", 200, {"Content-Type": "text/plain; charset=utf-8"}
