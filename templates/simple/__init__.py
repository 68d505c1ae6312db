"""The smallest app: one Blueprint with a /hello route, its API docs and its test.

Your Flask application: a Blueprint named ``blueprint`` that the python-flask stack serves. The
stack imports this package (as ``userapp`` in its containers) and registers ``blueprint`` on an app it makes, which already
provides, with no wiring from you:

* ``/health`` (plus ``/health/live``, ``/health/ready``, ``/health/started``): Kubernetes probes.
* ``/metrics``: Prometheus metrics for every route you add (requests, latency, in-flight).
* ``/apidocs/``: Swagger UI built from the docstrings of your views (the YAML after ``---``).

Run it with ``flask-stack run`` (reloads on save), debug it with ``flask-stack debug`` and the
"Attach" configurations in .vscode/launch.json, test it with ``flask-stack test`` (tests/ holds
your tests; the ``client`` fixture is a Flask test client of the whole stack app).

Your own runtime dependencies go in the [packages] section of Pipfile.
"""

from flask import Blueprint

blueprint = Blueprint("userapp", __name__)


@blueprint.get("/hello")
def hello():
    """Say hello.

    The YAML below the three dashes is the OpenAPI (Swagger 2.0) description shown at /apidocs/.
    ---
    tags:
      - hello
    produces:
      - text/plain
    responses:
      200:
        description: A greeting.
        schema:
          type: string
        examples:
          text/plain: Hello from Appsody!
    """
    return "Hello from Appsody!", 200, {"Content-Type": "text/plain; charset=utf-8"}


# Health checks: the stack's /health already reports UP when the app serves. To make readiness
# depend on something of yours (a database, a cache), see the stack's README ("Health checks").
#
# Hooks: ordinary Flask hooks work on the blueprint, for example:
#
# @blueprint.before_app_request
# def load_user():
#     ...
