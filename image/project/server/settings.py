"""Stack settings: read from environment variables, overridable by ``create_app(config)``.

Each setting has a config key (``USERAPP``) and an environment variable (``STACK_USERAPP``); a key in the
mapping passed to ``create_app`` wins over the environment. Keys may be given with or without the ``STACK_``
prefix. The resolved values are the stack's state of the app: ``app.extensions["flask_stack"].settings``.

===================  =========================  ================  ====================================================
key                  environment variable       default           meaning
===================  =========================  ================  ====================================================
APP                  FLASK_APP                  unset             where the app is: ``module``, ``module:name``,
                                                                  ``module:factory(args)`` (``server.discovery``)
USERAPP_DIR          STACK_USERAPP_DIR          unset             the project directory (where the app is looked for)
USERAPP              STACK_USERAPP              unset             module name of the project's own ``__init__.py``
                                                                  (default: the directory's name; "" = no user app)
DEBUG                STACK_DEBUG                ``0``             debug mode (Flask debug, tracebacks in error pages)
HEALTH_TIMEOUT       STACK_HEALTH_TIMEOUT       ``1``             default timeout of one health check, seconds
HEALTH_THREADS       STACK_HEALTH_THREADS       ``4``             health-check threads per app (concurrency cap)
COMMIT               STACK_COMMIT               unset             git commit reported by ``/health``
COMMIT_FILE          STACK_COMMIT_FILE          /project/.commit  file holding the commit when STACK_COMMIT is unset
APP_VERSION          STACK_APP_VERSION          unset             the user's app version (metrics info, API docs)
LOG_LEVEL            LOG_LEVEL                  ``INFO``          logging level name
LOG_FORMAT           LOG_FORMAT                 ``text``          ``text`` or ``json``
LOG_FLUSH_SECONDS    STACK_LOG_FLUSH_SECONDS    ``0``             longest wait of an INFO line before it is written,
                                                                  seconds (0 = at once; ``serve`` sets 0.25)
METRICS_IN_PROGRESS  STACK_METRICS_IN_PROGRESS  ``0``             ``1``: keep the ``http_requests_in_progress`` gauge
MAX_CONTENT_LENGTH   STACK_MAX_CONTENT_LENGTH   16777216 (16 MiB) largest request body, bytes (413 above it; 0 = none);
                                                                  Flask's own config key, so the user's app may set it
URL_PREFIX           STACK_URL_PREFIX           unset             path the app is mounted at (``/your/path``): every
                                                                  route lives under it, through ``SCRIPT_NAME``
PROXY_HOPS           STACK_PROXY_HOPS           ``0``             trusted proxies in front (``X-Forwarded-*`` via
                                                                  Werkzeug's ``ProxyFix``; 0 = headers ignored)
TRUSTED_HOSTS        STACK_TRUSTED_HOSTS        unset             host names the app answers to, comma-separated
                                                                  (``.example.com``: it and its subdomains): Flask's
                                                                  ``TRUSTED_HOSTS``, plus the machine's own names and
                                                                  addresses (probes); another ``Host`` gets 400.
                                                                  Unset: any host (redirects are relative anyway)
===================  =========================  ================  ====================================================

Production serving settings are read from the environment only, by ``serving.settings`` with the parsers
here.

One parser per type (``parse_bool``, ``parse_int``, ``parse_seconds``, ``parse_choice``, ``parse_level``,
``parse_url_prefix``, ``parse_hosts``); each raises
``SettingsError`` with one line naming the variable. A number given as an empty string is an error (unset the
variable instead): gunicorn itself would fail on ``WEB_CONCURRENCY=''`` with a traceback.

Multiprocess metrics follow prometheus_client: they are on when PROMETHEUS_MULTIPROC_DIR is set in the environment
before prometheus_client is first imported (it cannot be switched by config).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Mapping

from .exceptions import SettingsError

MIB = 1024 * 1024
DEFAULT_MAX_CONTENT_LENGTH = 16 * MIB  # bytes
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """The resolved stack settings of one app (see the module docstring for meanings and units)."""

    app: str | None = None
    userapp: str | None = None
    userapp_dir: str | None = None
    debug: bool = False
    health_timeout: float = 1.0
    health_threads: int = 4
    commit: str | None = None
    commit_file: str = "/project/.commit"
    app_version: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    log_flush_seconds: float = 0.0
    metrics_in_progress: bool = False
    max_content_length: int | None = DEFAULT_MAX_CONTENT_LENGTH
    url_prefix: str = ""
    proxy_hops: int = 0
    trusted_hosts: tuple[str, ...] | None = None


# (field, config key, environment variable)
_FIELDS = (
    ("app", "APP", "FLASK_APP"),
    ("userapp", "USERAPP", "STACK_USERAPP"),
    ("userapp_dir", "USERAPP_DIR", "STACK_USERAPP_DIR"),
    ("debug", "DEBUG", "STACK_DEBUG"),
    ("health_timeout", "HEALTH_TIMEOUT", "STACK_HEALTH_TIMEOUT"),
    ("health_threads", "HEALTH_THREADS", "STACK_HEALTH_THREADS"),
    ("commit", "COMMIT", "STACK_COMMIT"),
    ("commit_file", "COMMIT_FILE", "STACK_COMMIT_FILE"),
    ("app_version", "APP_VERSION", "STACK_APP_VERSION"),
    ("log_level", "LOG_LEVEL", "LOG_LEVEL"),
    ("log_format", "LOG_FORMAT", "LOG_FORMAT"),
    ("log_flush_seconds", "LOG_FLUSH_SECONDS", "STACK_LOG_FLUSH_SECONDS"),
    ("metrics_in_progress", "METRICS_IN_PROGRESS", "STACK_METRICS_IN_PROGRESS"),
    ("max_content_length", "MAX_CONTENT_LENGTH", "STACK_MAX_CONTENT_LENGTH"),
    ("url_prefix", "URL_PREFIX", "STACK_URL_PREFIX"),
    ("proxy_hops", "PROXY_HOPS", "STACK_PROXY_HOPS"),
    ("trusted_hosts", "TRUSTED_HOSTS", "STACK_TRUSTED_HOSTS"),
)

#: Config keys consumed by the stack (both spellings); everything else goes to Flask's config.
STACK_KEYS = (frozenset(k for _, key, env in _FIELDS for k in (key, "STACK_" + key, env))
              - {"DEBUG", "MAX_CONTENT_LENGTH", "TRUSTED_HOSTS"})


def parse_bool(name: str, value: Any) -> bool:
    """``1 true yes on`` / ``0 false no off`` (any case) or a bool; an empty string is False.

    Raises:
        SettingsError: anything else (one line naming ``name``).
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingsError(f"{name}={value!r} is not a boolean; use 1 or 0")


def parse_int(name: str, value: Any, minimum: int, maximum: int | None = None, example: int | None = None) -> int:
    """A whole number in ``[minimum, maximum]``. An empty string is an error (unset the variable instead).

    Raises:
        SettingsError: not a whole number, or out of range (one line naming ``name``).
    """
    try:
        number = int(str(value).strip()) if not isinstance(value, int) or isinstance(value, bool) else value
    except (TypeError, ValueError):
        hint = f"; unset it or give a whole number such as {name}={example if example is not None else minimum}"
        raise SettingsError(f"{name}={value!r} is not a whole number{hint}") from None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise SettingsError(f"{name}={value!r} must be {bounds}")
    return number


def parse_seconds(name: str, value: Any, minimum: float, inclusive: bool = True, maximum: float | None = None) -> float:
    """A number of seconds ``>= minimum`` (``> minimum`` unless ``inclusive``), at most ``maximum``. An empty string
    is an error (unset the variable instead).

    Raises:
        SettingsError: not a number, or out of range (one line naming ``name``).
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name}={value!r} is not a number of seconds") from None
    if number != number or (inclusive and not number >= minimum):
        raise SettingsError(f"{name}={value!r} must be at least {minimum:g}")
    if not inclusive and not number > minimum:
        raise SettingsError(f"{name}={value!r} must be greater than {minimum:g}")
    if maximum is not None and number > maximum:
        raise SettingsError(f"{name}={value!r} must be at most {maximum:g} seconds")
    return number


def parse_choice(name: str, value: Any, choices: tuple[str, ...], default: str, what: str = "a choice") -> str:
    """One of ``choices`` (case-insensitive; returned lower-case); an empty string is ``default``.

    Raises:
        SettingsError: anything else (one line: ``NAME='x' is not <what>; use a or b``).
    """
    text = str(value).strip().lower() or default
    if text not in choices:
        raise SettingsError(f"{name}={value!r} is not {what}; use {', '.join(choices[:-1])} or {choices[-1]}")
    return text


def parse_level(name: str, value: Any) -> str:
    """A ``logging`` level name (returned upper-case); an empty string is ``INFO``.

    Raises:
        SettingsError: not a level name.
    """
    level = str(value).strip().upper() or "INFO"
    if not isinstance(logging.getLevelName(level), int):
        raise SettingsError(f"{name}={value!r} is not a log level; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@-]+$")  # RFC 3986 pchar, unencoded (no "%", no "/")


def parse_url_prefix(name: str, value: Any) -> str:
    """A URL path prefix such as ``/your/path`` (returned without a trailing slash); an empty string or ``/`` is
    "" (the root, no prefix).

    Raises:
        SettingsError: no leading slash, an empty, ``.`` or ``..`` segment, or a character not allowed in a URL
            path (one line naming ``name``).
    """
    text = str(value).strip()
    if text in ("", "/"):
        return ""
    if not text.startswith("/"):
        raise SettingsError(f"{name}={value!r} must start with a slash, e.g. {name}=/{text.strip('/') or 'app'}")
    segments = text.rstrip("/").split("/")[1:]
    for segment in segments:
        if segment in ("", ".", "..") or not _PREFIX_SEGMENT.match(segment):
            raise SettingsError(f"{name}={value!r} is not a URL path like /your/path (segment {segment!r})")
    return "/" + "/".join(segments)


_HOST_NAME = re.compile(r"\.?[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")


def parse_hosts(name: str, value: Any) -> tuple[str, ...] | None:
    """Host names, comma- or space-separated (a list or tuple is taken as is): ``example.com``, ``.example.com``
    (the domain and its subdomains), an IPv4 address; no port, no scheme (Werkzeug's check cannot match IPv6
    addresses). Returned lower-case; empty: None (any host).

    Raises:
        SettingsError: a name with a scheme, port, path or other invalid character (one line naming ``name``).
    """
    items = [str(v).strip() for v in value] if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
    hosts = tuple(item.lower() for item in items if item)
    for host in hosts:
        if not _HOST_NAME.fullmatch(host):
            raise SettingsError(f"{name}={value!r}: {host!r} is not a host name; give names only, comma-separated, "
                                f"e.g. {name}=shop.example.com,.example.org")
    return hosts or None


def load_settings(config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve the stack settings.

    Args:
        config: overrides by config key (``USERAPP`` or ``STACK_USERAPP``); ``DEBUG`` and ``MAX_CONTENT_LENGTH`` are
            shared with Flask.
        environ: the environment to read (default ``os.environ``).

    Returns:
        Settings: the resolved, validated values.

    Raises:
        SettingsError: a value has the wrong type (one-line message naming the setting).
    """
    config = dict(config or {})
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    for field, key, env in _FIELDS:
        for name in (key, "STACK_" + key, env):
            if name in config:
                raw[field] = (name, config[name])
                break
        else:
            if env in environ:
                raw[field] = (env, environ[env])
    values: dict[str, Any] = {}
    for field, (name, value) in raw.items():
        if field in ("debug", "metrics_in_progress"):
            values[field] = parse_bool(name, value)
        elif field == "health_timeout":
            values[field] = parse_seconds(name, value, 0.0, inclusive=False)
        elif field == "log_flush_seconds":
            values[field] = parse_seconds(name, value, 0.0, maximum=60)
        elif field == "health_threads":
            values[field] = parse_int(name, value, 1)
        elif field == "proxy_hops":
            values[field] = parse_int(name, value, 0, 10, example=1)
        elif field == "url_prefix":
            values[field] = parse_url_prefix(name, value)
        elif field == "trusted_hosts":
            values[field] = None if value is None else parse_hosts(name, value)
        elif field == "max_content_length":
            values[field] = None if value is None else parse_int(name, value, 0, example=16 * MIB) or None
        elif field == "log_format":
            values[field] = parse_choice(name, value, ("text", "json"), "text", "a log format")
        elif field == "log_level":
            values[field] = parse_level(name, value)
        elif field == "userapp":
            values[field] = "" if value is None else str(value).strip()
        elif field == "app":
            values[field] = str(value).strip() or None if value is not None else None
        else:
            values[field] = None if value in (None, "") else str(value)
    return Settings(**values)


def read_commit(settings: Settings) -> str | None:
    """Return the git commit: ``settings.commit``, else the first line of ``settings.commit_file``, else None.

    Never raises: an unreadable file means "no commit".
    """
    if settings.commit:
        return settings.commit.strip() or None
    try:
        with open(settings.commit_file, encoding="utf-8") as fh:
            line = fh.readline().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return line[:64] or None
