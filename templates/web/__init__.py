"""A web site: Jinja pages with a layout, a stylesheet, a form with validation and flash messages.

The stack imports this package as ``userapp``, registers ``blueprint`` and serves ``templates/`` (Jinja) and
``static/`` (``url_for('static', filename=...)``) from this directory, beside ``/health``, ``/metrics`` and
``/apidocs/``. The guestbook below keeps its messages in memory (one list per app, emptied by a reload);
the ``api`` template shows a database.

Its settings are in ``settings.yaml``, one section per profile (``SECRET_KEY``, ``GUESTBOOK_SHOWN``).

Run it with ``flask-stack run`` and open http://127.0.0.1:8080/, test it with ``flask-stack test``, debug it
with ``flask-stack debug`` and .vscode/launch.json.
"""

from __future__ import annotations

import logging
import secrets

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for

blueprint = Blueprint("userapp", __name__)

MAX_NAME, MAX_TEXT = 40, 500


def init_app(app) -> None:
    """Flash messages live in the signed session cookie: they need ``SECRET_KEY``, which the stack puts in
    ``app.config`` from ``settings.yaml``'s profile or, in production, from a secret (``SECRET_KEY_FILE``, or a file
    ``SECRET_KEY`` in ``STACK_SECRETS_DIR``). Without one, a random key for this process, with one warning line.
    The guestbook's messages, newest first, live in the app (in memory: use a database for what you keep)."""
    if not app.config.get("SECRET_KEY"):  # Flask's default is None
        logging.getLogger(__name__).warning(
            "SECRET_KEY is not set (give it as a secret: SECRET_KEY_FILE, or SECRET_KEY in STACK_SECRETS_DIR): a "
            "random key for this process, so sessions end with it and are not shared between workers")
        app.config["SECRET_KEY"] = secrets.token_hex(32)
    app.extensions["guestbook"] = []


def messages() -> list[dict[str, str]]:
    """The current app's guestbook messages, newest first."""
    return current_app.extensions["guestbook"]


@blueprint.get("/")
def index():
    """The home page: the guestbook and its form."""
    return render_template("index.html", messages=shown(), max_name=MAX_NAME, max_text=MAX_TEXT)


def shown() -> list[dict[str, str]]:
    """The newest messages, as many as ``GUESTBOOK_SHOWN`` says (settings.yaml)."""
    return messages()[:current_app.config["GUESTBOOK_SHOWN"]]


@blueprint.post("/messages")
def post_message():
    """Add a message from the form; on a problem, say so and keep what was typed."""
    name = request.form.get("name", "").strip()
    text = request.form.get("text", "").strip()
    problems = []
    if not name or len(name) > MAX_NAME:
        problems.append(f"Your name must be 1 to {MAX_NAME} characters.")
    if not text or len(text) > MAX_TEXT:
        problems.append(f"Your message must be 1 to {MAX_TEXT} characters.")
    if problems:
        for problem in problems:
            flash(problem, "error")
        return render_template("index.html", messages=shown(), max_name=MAX_NAME, max_text=MAX_TEXT,
                               name=name, text=text), 400
    messages().insert(0, {"name": name, "text": text})
    flash(f"Thank you, {name}: your message is up.", "success")
    return redirect(url_for(".index"), 303)


@blueprint.get("/about")
def about():
    """A second page sharing the layout."""
    return render_template("about.html")
