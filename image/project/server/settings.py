"""The runtime's resolved settings: the registry's runtime settings (``stacksettings``, where each is declared once,
with its variable, ``app.config`` key, parser, default and meaning; README.md's environment-variable table is made
from it) resolved for one app. The resolved values are the stack's state of the app:
``app.extensions["flask_stack"].settings``.

Order (first wins): ``Stack(app, config=...)`` / ``create_app(config)``, then ``app.config["STACK_..."]`` when the app
set it (``Stack.init_app``), then the environment, then the registry's default.

Multiprocess metrics follow prometheus_client: they are on when PROMETHEUS_MULTIPROC_DIR is set in the environment
before prometheus_client is first imported (it cannot be switched by config).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any, Mapping

import stacksettings
from stacksettings import DEFAULT_MAX_CONTENT_LENGTH, MIB  # noqa: F401 - re-exported (deploy's and tests' import)

from .exceptions import SettingsError


@dataclass(frozen=True)
class Settings:
    """The resolved stack settings of one app (meanings and units: ``stacksettings``, by ``FIELDS``)."""

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


#: field -> environment variable (declared in ``stacksettings``; its ``key`` is the ``app.config`` key).
FIELDS = {
    "app": "FLASK_APP", "userapp": "STACK_USERAPP", "userapp_dir": "STACK_USERAPP_DIR", "debug": "STACK_DEBUG",
    "health_timeout": "STACK_HEALTH_TIMEOUT", "health_threads": "STACK_HEALTH_THREADS", "commit": "STACK_COMMIT",
    "commit_file": "STACK_COMMIT_FILE", "app_version": "STACK_APP_VERSION", "log_level": "LOG_LEVEL",
    "log_format": "LOG_FORMAT", "log_flush_seconds": "STACK_LOG_FLUSH_SECONDS",
    "metrics_in_progress": "STACK_METRICS_IN_PROGRESS", "max_content_length": "STACK_MAX_CONTENT_LENGTH",
    "url_prefix": "STACK_URL_PREFIX", "proxy_hops": "STACK_PROXY_HOPS", "trusted_hosts": "STACK_TRUSTED_HOSTS",
}
assert set(FIELDS) == {f.name for f in fields(Settings)}


def setting_names(field: str) -> tuple[str, ...]:
    """The names a config mapping may give ``field`` under: ``URL_PREFIX``, ``STACK_URL_PREFIX``, the variable."""
    env = FIELDS[field]
    key = stacksettings.setting(env).key or "STACK_" + field.upper()  # APP, USERAPP...: create_app(config) only
    short = key.removeprefix("STACK_")
    return tuple(dict.fromkeys((short, key, env)))



#: Config keys consumed by the stack (every spelling); everything else goes to Flask's config.
STACK_KEYS = frozenset(name for field in FIELDS for name in setting_names(field)) - {"DEBUG", "MAX_CONTENT_LENGTH",
                                                                              "TRUSTED_HOSTS"}


def _parse(field: str, name: str, value: Any) -> Any:
    """``value`` given as ``name`` parsed by ``field``'s declared parser; None: the default."""
    if value is None:
        return "" if field == "userapp" else None  # USERAPP=None: no user app
    try:
        return stacksettings.setting(FIELDS[field]).parse(name, value)
    except stacksettings.SettingsError as exc:
        raise SettingsError(str(exc)) from None


def load_settings(config: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None,
                  app_config: Mapping[str, Any] | None = None) -> Settings:
    """Resolve the stack settings.

    Args:
        config: overrides by config key (``URL_PREFIX``, ``STACK_URL_PREFIX`` or the variable's name); they win
            over everything.
        environ: the environment to read (default ``os.environ``).
        app_config: the app's ``app.config``: its ``STACK_...`` keys (``stacksettings.CONFIG_KEYS``) win over the
            environment.

    Returns:
        Settings: the resolved, validated values.

    Raises:
        SettingsError: a value is unusable (one line naming the setting).
    """
    config = dict(config or {})
    environ = os.environ if environ is None else environ
    app_config = app_config or {}
    values: dict[str, Any] = {}
    for field, env in FIELDS.items():
        key = stacksettings.setting(env).key
        given = next((name for name in setting_names(field) if name in config), None)
        if given is not None:
            parsed = _parse(field, given, config[given])
        elif key and key.startswith("STACK_") and key in app_config:
            parsed = _parse(field, key, app_config[key])
        elif env in environ:
            parsed = _parse(field, env, environ[env])
        else:
            continue
        if field == "max_content_length":
            parsed = parsed or None  # 0: no limit
        if parsed is not None or field in ("max_content_length", "trusted_hosts", "app"):  # None: none
            values[field] = parsed
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
