"""A REST API: items in a SQL database (SQLAlchemy), validated requests (pydantic), OpenAPI 3 docs, CRUD tests.

The stack imports this package as ``userapp``, registers ``blueprint``, calls ``init_app(app)`` and serves
``/health``, ``/metrics`` and ``/apidocs/`` (Swagger UI of the OpenAPI 3 document below) beside your routes.

* The database is the config key ``DATABASE_URL`` (any SQLAlchemy URL: ``postgresql://user:pass@host/db``,
  ``mysql+pymysql://...`` with its driver in the Pipfile), from ``settings.yaml``'s profile, a ``FLASK_DATABASE_URL``
  variable, or, as it holds a password, a secret: ``DATABASE_URL_FILE=/path``, or a file ``DATABASE_URL`` in
  ``STACK_SECRETS_DIR`` (what ``flask-stack deploy`` mounts from a Kubernetes Secret); else SQLite in ``items.sqlite3`` in the app's instance folder (``instance/``
  in the project: each project has its own; where it cannot be written, as in a container running as another
  user or a read-only image, a file of this instance folder's own in the temporary directory, with one warning
  line). Tables are created at start.
* Every request body is validated by a pydantic model (``schemas.py``): a bad one is answered 422 with each error.
* Every error is JSON, whatever the client's ``Accept`` says: RFC 9457 problem details
  (``application/problem+json``: ``type``, ``title``, ``status``, ``detail``, ``instance``, and ``errors`` for a
  422), for 404, 405, 415, 422 and a malformed body (400) alike.
* ``/health/ready`` is DOWN, with the reason in one line, while the database does not answer.

Run it with ``flask-stack run``, test it with ``flask-stack test`` (tests/ holds CRUD tests on a fresh SQLite
database each), debug it with ``flask-stack debug`` and .vscode/launch.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile

from flask import Blueprint, g, jsonify, request, url_for
from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException, UnprocessableEntity

from .models import Item, db
from .schemas import ItemIn, ItemOut, openapi_schemas

blueprint = Blueprint("userapp", __name__)

#: Merged into the stack's API docs: an OpenAPI 3 document whose schemas come from the pydantic models.
swagger_template = {
    "openapi": "3.0.3",
    "info": {"title": "Items API", "version": "1.0.0", "description": "Create, read, update and delete items."},
    "tags": [{"name": "items", "description": "The items in the database"}],
    "components": {
        "schemas": openapi_schemas(),
        "requestBodies": {"ItemIn": {"required": True, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/ItemIn"}}}}},
        "parameters": {"ItemId": {"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer"}}},
        "responses": {"NotFound": {"description": "No such item."},
                      "Invalid": {"description": "The body does not fit ItemIn: each field's error is listed."}},
    },
}


def database_url(configured: str | None, instance_path: str) -> str:
    """Return the SQLAlchemy URL: ``configured`` (the config's ``DATABASE_URL``; ``postgres://`` and
    ``postgresql://`` use psycopg 3), else SQLite in ``items.sqlite3`` in ``instance_path`` (the app's instance
    folder, made when missing), else, when that folder cannot be written, in ``items-<hash of
    instance_path>.sqlite3`` in the temporary directory."""
    url = str(configured or "").strip()
    if not url:
        try:
            os.makedirs(instance_path, exist_ok=True)
            if os.access(instance_path, os.W_OK):
                return f"sqlite:///{os.path.join(instance_path, 'items.sqlite3')}"
            reason = "not writable"
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
        digest = hashlib.sha256(instance_path.encode()).hexdigest()[:12]
        path = os.path.join(tempfile.gettempdir(), f"items-{digest}.sqlite3")
        logging.getLogger(__name__).warning("instance folder %s: %s; SQLite in %s (set DATABASE_URL: settings.yaml)",
                                            instance_path, reason, path)
        return f"sqlite:///{path}"
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def problem(exc: HTTPException):
    """Every HTTP error of the app as RFC 9457 problem details (``application/problem+json``), whatever ``Accept``
    says: this is an API. Redirects and errors carrying their own response pass through."""
    if exc.code is None or exc.code < 400 or exc.response is not None:
        return exc
    response = exc.get_response()  # keeps headers such as Allow
    body = {"type": "about:blank", "title": exc.name, "status": exc.code, "detail": exc.description or exc.name,
            "instance": request.path}
    if getattr(exc, "errors", None):
        body["errors"] = exc.errors
    request_id = g.get("request_id")
    if request_id:
        body["request_id"] = request_id
    response.set_data(json.dumps(body) + "\n")
    response.mimetype = "application/problem+json"
    return response


def init_app(app) -> None:
    """Connect the app to the database and create the tables (the database may come up later: readiness says);
    answer every error with problem details (:func:`problem`)."""
    app.register_error_handler(HTTPException, problem)
    if "SQLALCHEMY_DATABASE_URI" not in app.config:
        app.config["SQLALCHEMY_DATABASE_URI"] = database_url(app.config.get("DATABASE_URL"), app.instance_path)
    url = app.config["SQLALCHEMY_DATABASE_URI"]
    options = {"pool_pre_ping": True}  # a connection lost while the database restarted is replaced
    if url.startswith("postgresql"):
        options["connect_args"] = {"connect_timeout": 2}
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", options)
    db.init_app(app)
    with app.app_context():
        _create_tables()


def _create_tables() -> bool:
    """Create the tables that do not exist; False (and a warning) when the database does not answer."""
    try:
        db.create_all()
        return True
    except SQLAlchemyError as exc:
        from flask import current_app

        current_app.logger.warning("database not reachable, tables not created yet: %s", _reason(exc))
        return False


def _reason(exc: Exception) -> str:
    """One line saying why the database failed (the driver's first line, without SQLAlchemy's links)."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    return f"{type(cause).__name__}: {lines[0] if lines else 'no detail'}"


def database_ready() -> str:
    """Readiness check: the database answers ``SELECT 1`` (and the tables exist). When it does not, the driver's
    error is raised: the stack reports the check DOWN with its first line as the reason."""
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        raise (getattr(exc, "orig", None) or exc) from None
    if not _create_tables():
        raise RuntimeError("the tables could not be created")
    return f"{db.engine.dialect.name} answers"


readiness_checks = {"database": database_ready}


def _validated(model):
    """Return the JSON body validated by ``model``; answer 422 with pydantic's errors when it does not fit (400
    for a body that is not JSON, 415 for one that does not say it is JSON)."""
    try:
        return model.model_validate(request.get_json())
    except ValidationError as exc:
        errors = [{"field": ".".join(str(part) for part in error["loc"]), "message": error["msg"]}
                  for error in exc.errors()]
        invalid = UnprocessableEntity(f"{len(errors)} invalid field(s)")
        invalid.errors = errors
        raise invalid from None


def _item_or_404(item_id: int) -> Item:
    return db.get_or_404(Item, item_id, description=f"no item {item_id}")


def _out(item: Item) -> dict:
    return ItemOut.model_validate(item).model_dump(mode="json")


@blueprint.get("/items")
def list_items():
    """List items, oldest first.
    ---
    tags: [items]
    parameters:
      - {name: limit, in: query, schema: {type: integer, minimum: 1, maximum: 100, default: 20}}
      - {name: offset, in: query, schema: {type: integer, minimum: 0, default: 0}}
    responses:
      200:
        description: The items.
        content:
          application/json:
            schema: {type: array, items: {$ref: '#/components/schemas/ItemOut'}}
    """
    limit = min(max(request.args.get("limit", 20, type=int), 1), 100)
    offset = max(request.args.get("offset", 0, type=int), 0)
    items = db.session.scalars(select(Item).order_by(Item.id).limit(limit).offset(offset))
    return jsonify([_out(item) for item in items])


@blueprint.post("/items")
def create_item():
    """Create an item.
    ---
    tags: [items]
    requestBody: {$ref: '#/components/requestBodies/ItemIn'}
    responses:
      201:
        description: The item created; its URL is in Location.
        content:
          application/json:
            schema: {$ref: '#/components/schemas/ItemOut'}
      422: {$ref: '#/components/responses/Invalid'}
    """
    data = _validated(ItemIn)
    item = Item(**data.model_dump())
    db.session.add(item)
    db.session.commit()
    return jsonify(_out(item)), 201, {"Location": url_for(".get_item", item_id=item.id)}


@blueprint.get("/items/<int:item_id>")
def get_item(item_id: int):
    """Read one item.
    ---
    tags: [items]
    parameters:
      - $ref: '#/components/parameters/ItemId'
    responses:
      200:
        description: The item.
        content:
          application/json:
            schema: {$ref: '#/components/schemas/ItemOut'}
      404: {$ref: '#/components/responses/NotFound'}
    """
    return jsonify(_out(_item_or_404(item_id)))


@blueprint.put("/items/<int:item_id>")
def replace_item(item_id: int):
    """Replace an item.
    ---
    tags: [items]
    parameters:
      - $ref: '#/components/parameters/ItemId'
    requestBody: {$ref: '#/components/requestBodies/ItemIn'}
    responses:
      200:
        description: The item as stored.
        content:
          application/json:
            schema: {$ref: '#/components/schemas/ItemOut'}
      404: {$ref: '#/components/responses/NotFound'}
      422: {$ref: '#/components/responses/Invalid'}
    """
    item = _item_or_404(item_id)
    for field, value in _validated(ItemIn).model_dump().items():
        setattr(item, field, value)
    db.session.commit()
    return jsonify(_out(item))


@blueprint.delete("/items/<int:item_id>")
def delete_item(item_id: int):
    """Delete an item.
    ---
    tags: [items]
    parameters:
      - $ref: '#/components/parameters/ItemId'
    responses:
      204: {description: Deleted.}
      404: {$ref: '#/components/responses/NotFound'}
    """
    db.session.delete(_item_or_404(item_id))
    db.session.commit()
    return "", 204
