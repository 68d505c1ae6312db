"""User package served by the reliability tests: the template's /hello plus endpoints that let the tests hold
requests in flight, see which worker answered, send JSON, and hang a readiness check.

Set RELIABILITY_HANG_CHECK=1 in the server's environment to make the readiness check ``dependency`` sleep forever
(a dependency that never answers).
"""

import os
import threading
import time

from flask import Blueprint, abort, jsonify, request

blueprint = Blueprint("reliability", __name__)
_never = threading.Event()


@blueprint.get("/hello")
def hello():
    """Say hello.
    ---
    produces:
      - text/plain
    responses:
      200:
        description: A greeting.
        schema:
          type: string
    """
    return "Hello from Appsody!", 200, {"Content-Type": "text/plain; charset=utf-8"}


@blueprint.get("/whoami")
def whoami():
    """The pid of the worker process that answered, after holding the request ``hold`` seconds (0 to 0.2).
    ---
    produces:
      - application/json
    parameters:
      - name: hold
        in: query
        type: number
        minimum: 0
        maximum: 0.2
        required: false
    responses:
      200:
        description: The worker's pid.
        schema:
          type: object
          properties:
            pid:
              type: integer
          required: [pid]
      400:
        description: hold is not a number from 0 to 0.2.
    """
    try:
        hold = float(request.args.get("hold", "0"))
    except ValueError:
        return jsonify(error="hold must be a number"), 400
    if not 0 <= hold <= 0.2:
        return jsonify(error="hold must be from 0 to 0.2"), 400
    time.sleep(hold)
    return jsonify(pid=os.getpid())


@blueprint.get("/slow")
def slow():
    """Answer after a delay (seconds, 0 to 30), to hold a request in flight (the fuzzing tests skip it).
    ---
    produces:
      - application/json
    parameters:
      - name: seconds
        in: query
        type: number
        minimum: 0
        maximum: 30
        required: false
    responses:
      200:
        description: Slept.
        schema:
          type: object
          properties:
            slept:
              type: number
      400:
        description: seconds is not a number from 0 to 30.
    """
    try:
        seconds = float(request.args.get("seconds", "0"))
    except ValueError:
        return jsonify(error="seconds must be a number"), 400
    if not 0 <= seconds <= 30:
        return jsonify(error="seconds must be from 0 to 30"), 400
    time.sleep(seconds)
    return jsonify(slept=seconds)


@blueprint.post("/echo")
def echo():
    """Echo a JSON object back.
    ---
    consumes:
      - application/json
    produces:
      - application/json
    parameters:
      - name: body
        in: body
        required: true
        schema:
          type: object
    responses:
      200:
        description: The same object.
        schema:
          type: object
      400:
        description: The body is not a JSON object.
    """
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return jsonify(error="the body must be a JSON object"), 400
    return jsonify(data)


@blueprint.post("/parse")
def parse():
    """Parse the JSON body strictly (no API docs: the malformed-body tests use it): bad JSON is the stack's 400."""
    return jsonify(type=type(request.get_json()).__name__)


@blueprint.post("/size")
def size():
    """Read the raw body (no API docs: the body tests use it) and answer its length in bytes."""
    return jsonify(size=len(request.get_data()))


@blueprint.get("/boom")
def boom():
    """Fail with an unhandled exception (the stack answers 500 without a traceback)."""
    raise RuntimeError("reliability test failure on purpose")


@blueprint.get("/unavailable")
def unavailable():
    """Answer 503 with the stack's error page (no API docs: the front's tests check that nginx passes it on)."""
    abort(503)


def dependency():
    """Readiness check of a pretend dependency; never returns when RELIABILITY_HANG_CHECK=1."""
    if os.environ.get("RELIABILITY_HANG_CHECK") == "1":
        _never.wait()
    return "reachable"


readiness_checks = {"dependency": dependency}
