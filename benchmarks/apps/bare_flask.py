"""The baseline: bare Flask serving the `simple` template's code (a Blueprint named ``userapp`` with /hello), as a
developer without the stack would serve it (``app.register_blueprint``), and nothing else (no health, metrics, docs,
logs). The same user code on both sides: Flask's own Blueprint dispatch (about 7,500 instructions per request,
``benchmarks/instructions.py --parts``, ``bare-routes``) is not the stack's cost."""

from flask import Blueprint, Flask

blueprint = Blueprint("userapp", __name__)


@blueprint.get("/hello")
def hello():
    """Same body and content type as the `simple` template's /hello."""
    return "Hello from Appsody!", 200, {"Content-Type": "text/plain; charset=utf-8"}


app = Flask(__name__)
app.register_blueprint(blueprint)
