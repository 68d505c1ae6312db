"""Stack settings: read from environment variables, overridable by ``create_app(config)``.

Each setting has a config key (``USERAPP``) and an environment variable (``STACK_USERAPP``); a key in the
mapping passed to ``create_app`` wins over the environment. Keys may be given with or without the ``STACK_``
prefix. The resolved values are stored in ``app.config`` under the prefixed name (``app.config["STACK_USERAPP"]``).

===================  =========================  ================  ====================================================
key                  environment variable       default           meaning
===================  =========================  ================  ====================================================
USERAPP              STACK_USERAPP              ``userapp``       module name of the user's package ("" = no user app)
USERAPP_DIR          STACK_USERAPP_DIR          unset             directory holding the user's ``__init__.py``
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
===================  =========================  ================  ====================================================

Multiprocess metrics follow prometheus_client: they are on when PROMETHEUS_MULTIPROC_DIR is set in the environment
before prometheus_client is first imported (it cannot be switched by config).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Mapping

from .exceptions import SettingsError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class Settings:
    """The resolved stack settings of one app (see the module docstring for meanings and units)."""

    userapp: str = "userapp"
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


# (field, config key, environment variable)
_FIELDS = (
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
)

#: Config keys consumed by the stack (both spellings); everything else goes to Flask's config.
STACK_KEYS = frozenset(k for _, key, env in _FIELDS for k in (key, "STACK_" + key, env)) - {"DEBUG"}


def _to_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingsError(f"{name}={value!r} is not a boolean; use 1 or 0")


def _to_float(name: str, value: Any, minimum: float, inclusive: bool = False) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name}={value!r} is not a number of seconds") from None
    if inclusive and not number >= minimum:
        raise SettingsError(f"{name}={value!r} must be at least {minimum:g}")
    if not inclusive and not number > minimum:
        raise SettingsError(f"{name}={value!r} must be greater than {minimum:g}")
    return number


def _to_int(name: str, value: Any, minimum: int) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name}={value!r} is not an integer") from None
    if number < minimum:
        raise SettingsError(f"{name}={value!r} must be at least {minimum}")
    return number


def load_settings(config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve the stack settings.

    Args:
        config: overrides by config key (``USERAPP`` or ``STACK_USERAPP``); ``DEBUG`` is shared with Flask.
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
            values[field] = _to_bool(name, value)
        elif field == "health_timeout":
            values[field] = _to_float(name, value, 0.0)
        elif field == "log_flush_seconds":
            values[field] = 0.0 if str(value).strip() == "" else _to_float(name, value, 0.0, inclusive=True)
            if values[field] > 60:
                raise SettingsError(f"{name}={value!r} is more than 60 seconds; logs would arrive too late to help")
        elif field == "health_threads":
            values[field] = _to_int(name, value, 1)
        elif field == "log_format":
            text = str(value).strip().lower() or "text"
            if text not in ("text", "json"):
                raise SettingsError(f"{name}={value!r} is not a log format; use text or json")
            values[field] = text
        elif field == "log_level":
            level = str(value).strip().upper() or "INFO"
            if not isinstance(logging.getLevelName(level), int):
                raise SettingsError(f"{name}={value!r} is not a log level; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
            values[field] = level
        elif field == "userapp":
            values[field] = "" if value is None else str(value).strip()
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
