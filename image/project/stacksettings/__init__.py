"""Every setting the stack reads, declared once (the model is gunicorn's ``config.py``: name, validator, default,
doc); standard library only, so every layer imports it: the CLI (``flask_stack``, outside the image, loads this
file through ``flask_stack.paths.stacksettings()``), the dev loop, the runtime (``server``), the serving layer and
its front. The declarations are in this file, the parsers in ``parsers.py``.

A :class:`Setting` names its environment variable, its ``app.config`` key (runtime settings only), its parser, its
default, its unit, the layers that read it and its one-line meaning; ``internal`` ones are set by the stack for
itself. README.md's environment-variable table is generated from :data:`SETTINGS` (``scripts/settings-table``).

Reading: ``value("STACK_HOST", environ)`` parses the variable (``environ`` defaults to ``os.environ``) or returns
the declared default (or the ``default`` given, for a default that depends on the layer); a bad value raises
:class:`SettingsError` with one line naming the variable. No other module reads a stack setting from
``os.environ`` (``tests/cli/test_settings_registry.py`` checks it).

One parser per type (``parse_bool``, ``parse_int``, ``parse_seconds``, ``parse_choice``, ``parse_level``,
``parse_url_prefix``, ``parse_hosts``, ``parse_text``: ``stacksettings.parsers``, re-exported here), one truthiness rule for every layer (``1 true yes on`` /
``0 false no off``, any case; empty: the default). A number given as an empty string is an error (unset the
variable instead): gunicorn itself would fail on ``WEB_CONCURRENCY=''`` with a traceback.

The stack's version is here too (:data:`VERSION`): pyproject.toml reads it (hatch's dynamic version), the CLI, the
runtime and the dev loop import it, and ``stack.yaml`` holds the same literal for Appsody (a test compares them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, MutableMapping

from .parsers import (DEFAULT_MAX_CONTENT_LENGTH, MIB, SettingsError, parse_body_limit, parse_bool, parse_choice,
                      parse_hosts, parse_int, parse_level, parse_raw, parse_seconds, parse_text, parse_url_prefix)

__all__ = ["DEFAULT_MAX_CONTENT_LENGTH", "MIB", "SETTINGS", "CONFIG_KEYS", "Setting", "SettingsError",
           "USER_CONFIG_FILES", "VERSION", "closest_key", "is_set", "parse_body_limit", "parse_bool", "parse_choice",
           "parse_hosts", "parse_int", "parse_level", "parse_raw", "parse_seconds", "parse_text", "parse_url_prefix",
           "raw", "set_default", "setting", "value"]

__version__ = "0.4.0"
#: The stack's version (stack.yaml's ``version``, the wheel's, the images' label).
VERSION = __version__

#: The layers a setting may be read by (README's "read by" column).
LAYERS = ("cli", "devloop", "runtime", "serving", "front", "image")


# --- the registry ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """One setting.

    Attributes:
        env: the environment variable.
        parse: ``parse(name, value) -> value``; None back means "the default".
        default: the value when unset (None: none; a layer-dependent default is given by its reader).
        layers: the layers that read it (:data:`LAYERS`).
        doc: one line: what it means (Markdown, for README's table).
        key: its ``app.config`` key (runtime settings; ``Stack.init_app`` reads it), or None.
        unit: ``seconds``, ``bytes``... ("" when none).
        shown_default: the default as README shows it (default: the value, in backticks; "unset" for None).
        internal: set by the stack for itself (README lists these apart).
        read_by: README's "read by" cell when not just the layers (a third party's variable).
    """

    env: str
    parse: Callable[[str, Any], Any]
    default: Any
    layers: tuple[str, ...]
    doc: str
    key: str | None = None
    unit: str = ""
    shown_default: str | None = None
    internal: bool = False
    read_by: str | None = None

    def shown(self) -> str:
        """The default as README's table shows it."""
        if self.shown_default is not None:
            return self.shown_default
        if self.default is None:
            return "unset"
        value = self.default
        text = ("1" if value else "0") if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) \
            else str(value)
        return f"`{text}`"


_S = Setting


def _ranged(minimum: int, maximum: int | None = None, example: int | None = None) -> Callable[[str, Any], int]:
    return lambda name, value: parse_int(name, value, minimum, maximum, example)


def _seconds(minimum: float = 0.0, inclusive: bool = True, maximum: float | None = None) -> Callable[[str, Any], float]:
    return lambda name, value: parse_seconds(name, value, minimum, inclusive, maximum)


def _choice(choices: tuple[str, ...], what: str) -> Callable[[str, Any], str | None]:
    return lambda name, value: parse_choice(name, value, choices, what)


SERVERS = ("granian", "gunicorn", "uwsgi")  # the default first (README.md, "Production serving", says why)
FRONTS = ("none", "nginx")  # STACK_FRONT; the deployable image sets nginx
LOG_FORMATS = ("text", "json")
DEBUGGERS = ("debugpy", "ptvsd")
MODES = ("run", "debug", "test")
#: The user's own configuration file in the project dir, one of these (``server.userconfig``; the CLI's ``deploy``).
USER_CONFIG_FILES = ("settings.yaml", "settings.yml", "settings.toml")

_DECLARED = (
    # --- where the app listens and what it is ---------------------------------------------------------------
    _S("PORT", _ranged(1, 65535, 8080), 8080, ("devloop", "serving"), "TCP port the app listens on (1-65535)"),
    _S("STACK_HOST", parse_text, None, ("devloop", "serving"), "address the app listens on",
       shown_default="dev loop: `0.0.0.0` in a container, else `127.0.0.1`; serving layer: `0.0.0.0`"),
    _S("FLASK_RUN_PORT", _ranged(1, 65535, 8080), 8080, ("cli",),
       "the host port the app is served on (`run`, `debug`: `--port`), as `flask run` reads it"),
    _S("FLASK_APP", parse_text, None, ("runtime", "cli"),
       "where your app is: `module`, `module:name`, `module:create_app(args)` (Flask's syntax); also read from the "
       "project's `.flaskenv`/`.env`; the CLI's `--app` sets it",
       shown_default="unset (found as `flask run` finds it)"),
    _S("STACK_USERAPP_DIR", parse_text, None, ("runtime", "devloop", "cli"),
       "the project directory, where the app is looked for; the CLI, the dev loop and the images set it "
       "(`/project/userapp` in the containers)",
       shown_default="unset: the current directory"),
    _S("STACK_USERAPP", parse_raw, None, ("runtime", "devloop"),
       "module name of the project's own `__init__.py` (`\"\"`: no user app, the stack's endpoints only)",
       shown_default="the project directory's name"),
    # --- the runtime (the Flask extension): app.config keys too -----------------------------------------------
    _S("STACK_DEBUG", parse_bool, False, ("runtime", "serving"),
       "debug mode (Flask debug, tracebacks in error pages); forced off by the serving layer", key="STACK_DEBUG"),
    _S("STACK_HEALTH_TIMEOUT", _seconds(0.0, inclusive=False), 1.0, ("runtime",),
       "default timeout of one health check", key="STACK_HEALTH_TIMEOUT", unit="seconds"),
    _S("STACK_HEALTH_THREADS", _ranged(1, example=4), 4, ("runtime",), "health checks one app runs at once",
       key="STACK_HEALTH_THREADS"),
    _S("STACK_COMMIT", parse_text, None, ("runtime", "cli"),
       "git commit reported by `/health` (`flask-stack build` passes it, else `git rev-parse HEAD`)",
       key="STACK_COMMIT"),
    _S("STACK_COMMIT_FILE", parse_text, "/project/.commit", ("runtime",),
       "file holding the commit when `STACK_COMMIT` is unset", key="STACK_COMMIT_FILE"),
    _S("STACK_APP_VERSION", parse_text, None, ("runtime", "cli"),
       "your app's version (in `flask_stack_info` and the API docs; `flask-stack build`: else `git describe`)",
       key="STACK_APP_VERSION"),
    _S("LOG_LEVEL", parse_level, "INFO", ("runtime", "devloop", "serving"), "logging level", key="STACK_LOG_LEVEL"),
    _S("LOG_FORMAT", _choice(LOG_FORMATS, "a log format"), "text", ("runtime", "devloop", "serving"),
       "`text` (`YYYY-MM-DD HH:MM:SS [LEVEL] message`) or `json` (one object per line)", key="STACK_LOG_FORMAT"),
    _S("STACK_LOG_FLUSH_SECONDS", _seconds(0.0, maximum=60), 0.0, ("runtime", "serving"),
       "longest time an INFO or DEBUG line waits in the process before it is written to stdout in a batch; a "
       "WARNING or worse line writes everything pending at once; pending lines are written when a worker exits",
       key="STACK_LOG_FLUSH_SECONDS", unit="seconds", shown_default="`0` (at once); `serve` sets `0.25`"),
    _S("STACK_METRICS_IN_PROGRESS", parse_bool, False, ("runtime",),
       "`1`: export the `http_requests_in_progress` gauge (summed over live workers)",
       key="STACK_METRICS_IN_PROGRESS"),
    _S("STACK_MAX_CONTENT_LENGTH", parse_body_limit, DEFAULT_MAX_CONTENT_LENGTH, ("runtime", "front", "cli"),
       "largest request body, answered 413 before it is read; `0`: no limit; Flask's `MAX_CONTENT_LENGTH`, which "
       "your app may also set (it wins)", key="STACK_MAX_CONTENT_LENGTH", unit="bytes",
       shown_default="`16777216` (16 MiB)"),
    _S("STACK_URL_PREFIX", parse_url_prefix, "", ("runtime", "devloop", "front", "cli"),
       "path the app is mounted at, e.g. `/your/path`: every route (yours, `/health*`, `/metrics`, `/apidocs/`, "
       "`/`) lives under it, through `SCRIPT_NAME`, on every server and in the dev loop; other paths are 404; "
       "must start with `/` (see [Behind a reverse proxy](#behind-a-reverse-proxy-under-a-path))",
       key="STACK_URL_PREFIX", shown_default="unset: the root"),
    _S("STACK_PROXY_HOPS", _ranged(0, 10, 1), 0, ("runtime", "front"),
       "how many proxies in front to trust (0-10): Werkzeug's `ProxyFix` takes the client's address, scheme, host "
       "and prefix from the `X-Forwarded-For/-Proto/-Host/-Prefix` values they added", key="STACK_PROXY_HOPS",
       shown_default="`0`: `X-Forwarded-*` ignored"),
    _S("STACK_TRUSTED_HOSTS", parse_hosts, None, ("runtime",),
       "host names the app answers, comma-separated (`shop.example.com,.example.org`; a leading dot: and its "
       "subdomains; no port or scheme): Flask's `TRUSTED_HOSTS` plus the machine's own names and addresses "
       "(probes); another `Host` gets 400. Redirects are relative either way (see "
       "[Host names](#behind-a-reverse-proxy-under-a-path))", key="STACK_TRUSTED_HOSTS",
       shown_default="unset: any host"),
    _S("PROMETHEUS_MULTIPROC_DIR", parse_text, None, ("runtime", "serving"),
       "prometheus_client's multiprocess directory (every server, one process or many: per-worker gauges are "
       "summed over live workers); its `*.db` files are wiped at start, and a dead worker's counts are folded "
       "into `<type>_folded.db`", shown_default="unset: `serve` makes a temporary one (removed at exit)"),
    # --- profiles and secrets (issue 17 part C reads them) ----------------------------------------------------
    _S("STACK_PROFILE", parse_text, None, ("runtime", "devloop", "serving", "cli"),
       "configuration profile of your `settings.yaml`", shown_default="unset: `development` under `run`/`debug`, "
       "`testing` under `flask-stack test`, `production` under `serve` and in the deployable image"),
    _S("STACK_SECRETS_DIR", parse_text, None, ("runtime",),
       "directory of one file per config key (as a mounted Kubernetes Secret lays it out), read into `app.config`",
       shown_default="unset: none"),
    # --- the dev loop ----------------------------------------------------------------------------------------
    _S("STACK_DEBUG_PORT", _ranged(0, 65535, 5678), 5678, ("devloop",),
       "debugpy's port in debug mode (`0`: any free port)"),
    _S("STACK_DEBUG_WAIT", parse_bool, False, ("devloop",), "`1`: wait for the debugger client before serving"),
    _S("STACK_DEBUG_HOST", parse_text, None, ("devloop",),
       "address the debugger (debugpy) listens on in debug mode; the Dev Container sets `127.0.0.1`",
       shown_default="the app's address (`STACK_HOST`)"),
    _S("STACK_DEBUGGER", _choice(DEBUGGERS, "a debugger"), "debugpy", ("devloop",),
       "`ptvsd` to use the original stack's debugger when installed"),
    _S("STACK_SHOW_URLS", parse_bool, True, ("devloop",),
       "once the first app process answers, log one line with the app's URL (a route of your app, `/hello`, when "
       "`/` is the stack's redirect to the API docs: the choice `flask-stack run` makes), health, metrics and API "
       "docs; `0`: do not (`flask-stack run` prints them itself)"),
    _S("STACK_MODE", _choice(MODES, "a mode"), "run", ("image",),
       "mode of the development image when the container is given no argument: `run`, `debug` or `test`"),
    _S("APPSODY_PROJECT_DIR", parse_text, None, ("devloop",), "the project root; your package is its `userapp/` "
       "(the Appsody CLI sets it)", shown_default="`/project` in the development image"),
    _S("APPSODY_DEPS", parse_text, None, ("devloop",),
       "where your project's declared packages are installed ([Dependencies](#dependencies))",
       shown_default="unset locally, `/project/deps` in the image"),
    _S("WATCHFILES_FORCE_POLLING", parse_bool, False, ("devloop",), "`1`: poll for changes instead of inotify",
       read_by="dev loop (watchfiles)", shown_default="unset"),
    _S("STACK_UV", parse_text, None, ("cli", "devloop"),
       "the uv binary that resolves and installs packages; `pip` installs with pip instead (also what happens when "
       "there is no uv; a project's packages are still resolved by uv: `uv` on PATH or the `uv` package)",
       shown_default="the CLI: the uv installed with flask-stack; the dev loop: `uv` on PATH"),
    # --- the serving layer -----------------------------------------------------------------------------------
    _S("STACK_SERVER", _choice(SERVERS, "a server"), "granian", ("serving",),
       "`granian`, `gunicorn` or `uwsgi` (see [Production serving](#production-serving))"),
    _S("STACK_FRONT", _choice(FRONTS, "a front"), "none", ("serving", "front"),
       "`nginx`: nginx (on PATH or /usr/sbin) buffers requests in front of the server, see "
       "[Production serving](#production-serving); `none`: the server alone",
       shown_default="`nginx` in the deployable image, else `none`"),
    _S("STACK_PROBE_PORT", _ranged(0, 65535, 8090), 8090, ("front",),
       "with `STACK_FRONT=nginx`, the port of the probe listener (health endpoints and `/metrics` only, an nginx "
       "of its own that a flood of `PORT` cannot starve); `0`: none (the HEALTHCHECK then uses `PORT`)"),
    _S("STACK_FRONT_CONNECTIONS", _ranged(64, example=8192), 8192, ("front",),
       "connections the front's public nginx holds (`worker_connections`; its file descriptors are this + 256, "
       "cut to the container's hard limit)"),
    _S("STACK_FRONT_CLIENT_CONNECTIONS", _ranged(0, example=256), 256, ("front",),
       "requests in progress per client address on `PORT`; more are answered 503 at once; `0`: no limit (behind "
       "a proxy that hides client addresses, raise it or set 0)"),
    _S("STACK_FRONT_BODY_BUDGET", _ranged(0, example=128 * MIB), 128 * MIB, ("front",),
       "request bodies the front buffers in files under `$TMPDIR` at once (memory on a tmpfs); past it a body is "
       "answered 503 before it is read (see [Production serving](#production-serving))", unit="bytes",
       shown_default="`134217728` (128 MiB)"),
    _S("WEB_CONCURRENCY", _ranged(1, example=3), None, ("serving",), "worker processes",
       shown_default="usable CPUs + 1, at least 2"),
    _S("STACK_THREADS", _ranged(1, example=4), 4, ("serving",), "threads per worker"),
    _S("STACK_WORKER_TIMEOUT", _ranged(1, example=30), 30, ("serving",),
       "how long a silent worker lives before it is restarted (uWSGI: `--harakiri`, how long one request may take "
       "before its worker is restarted; granian: not used)", unit="seconds"),
    _S("STACK_GRACEFUL_TIMEOUT", _ranged(1, example=25), 25, ("serving",), "from SIGTERM to SIGKILL of workers",
       unit="seconds"),
    _S("STACK_SHUTDOWN_DELAY", _seconds(0.0), 0.0, ("serving", "front"),
       "how long a worker keeps accepting after SIGTERM, readiness DOWN and `Connection: close` on every response; "
       "below `STACK_GRACEFUL_TIMEOUT`", unit="seconds",
       shown_default="`5` in Kubernetes (`7` with `deploy --nginx-sidecar`), else `0`"),
    _S("KUBERNETES_SERVICE_HOST", parse_text, None, ("serving",),
       "set by the kubelet in every pod: the serving layer's `STACK_SHUTDOWN_DELAY` defaults to 5 there",
       read_by="serving layer (set by Kubernetes)"),
    _S("STACK_CONTROL_SOCKET", parse_text, None, ("serving",), "path of gunicorn's control socket",
       read_by="serving layer (gunicorn)", shown_default="unset: off"),
    _S("STACK_UWSGI_SOCKET", parse_text, None, ("serving",),
       "a uwsgi-protocol socket for nginx's `uwsgi_pass` beside the HTTP port: `127.0.0.1:3031`, `[::1]:3031` or a "
       "unix socket path; a non-loopback address is refused (exit 2) unless `STACK_UWSGI_SOCKET_PUBLIC=1`",
       read_by="serving layer (uWSGI)", shown_default="unset: none"),
    _S("STACK_UWSGI_SOCKET_PUBLIC", parse_bool, False, ("serving",),
       "`1`: allow `STACK_UWSGI_SOCKET` on a non-loopback address (the uwsgi protocol can make the server load "
       "code: only behind a network you trust)", read_by="serving layer (uWSGI)"),
    _S("GUNICORN_CMD_ARGS", parse_text, None, ("serving",), "any gunicorn option; wins over `gunicorn.conf.py`",
       read_by="gunicorn"),
    # --- the CLI ---------------------------------------------------------------------------------------------
    _S("STACK_ENGINE", _choice(("local", "docker", "podman"), "an engine"), None, ("cli",),
       "default for `--engine`: `local`, `docker` or `podman`",
       shown_default="unset: the project's `flask-stack-engine:` (from `init --engine`), else `local`"),
    _S("STACK_BASE_IMAGE", parse_text, None, ("cli",), "base image of every build (`--base-image` wins)",
       shown_default="`python:3.12-slim-bookworm`"),
    _S("STACK_CACHE_DIR", parse_text, None, ("cli",),
       "where the local engine keeps the stack's environments and each project's packages and server record",
       shown_default="`$XDG_CACHE_HOME/flask-stack` or `~/.cache/flask-stack`"),
    _S("STACK_PYTHON", parse_text, None, ("cli",), "interpreter (3.11+) for the local engine's virtual environments",
       shown_default="the Python running the CLI"),
    _S("DOCKER_HOST", parse_text, None, ("cli",),
       "the Docker API the CLI talks to; podman's works too (`podman system service`, then "
       "`unix:///path/to/podman.sock`)", read_by="Docker CLI (`--engine docker`)",
       shown_default="the Docker CLI's default"),
    _S("DOCKER_BUILDKIT", parse_text, None, ("cli",), "passed to `docker build` as set; podman's Docker API has no "
       "BuildKit", read_by="CLI, Docker CLI", shown_default="unset: `0` for builds when the Docker CLI's server is "
       "podman"),
    # --- the templates' own ----------------------------------------------------------------------------------
    _S("DATABASE_URL", parse_text, None, (), "the SQLAlchemy URL of its database (`postgres://` and "
       "`postgresql://` use psycopg 3)", read_by="`api` template",
       shown_default="SQLite in `items.sqlite3` in the app's instance folder (the project's `instance/`)"),
    _S("SECRET_KEY", parse_text, None, (), "signs the session cookie that carries flash messages",
       read_by="`web` template", shown_default="a random key per app process"),
    # --- internal: the stack sets these for itself -----------------------------------------------------------
    _S("STACK_METRICS_DIR_TEMP", parse_bool, False, ("serving",),
       "`1`: `serve` made `PROMETHEUS_MULTIPROC_DIR` as a temporary dir and removes it at exit", internal=True),
    _S("STACK_DEVLOOP_FD", _ranged(0), None, ("devloop",),
       "the dev loop's listening socket, inherited across its re-exec", internal=True),
    _S("STACK_APP_SOCKET", parse_text, None, ("serving",),
       "the unix socket granian listens on behind the nginx front (instead of STACK_HOST:PORT), set by the front",
       internal=True),
    _S("STACK_UWSGI_DRAIN_FD", _ranged(0), None, ("serving",),
       "the pipe uWSGI's workers watch to begin draining, set by the serving layer", internal=True),
    _S("STACK_APP_CHECK_FD", parse_text, None, ("serving",),
       "the descriptors of `serve`'s app load check: its verdict, which the server's master waits for, and beside "
       "the workers the first worker's report of its own load (`serving/appcheck.py`)", internal=True),
)

#: Every setting, by environment variable.
SETTINGS: dict[str, Setting] = {s.env: s for s in _DECLARED}
#: The runtime settings ``app.config`` may hold, by config key.
CONFIG_KEYS: dict[str, Setting] = {s.key: s for s in _DECLARED if s.key}
_UNSET = object()


def setting(name: str) -> Setting:
    """The declared setting of environment variable ``name``.

    Raises:
        KeyError: ``name`` is not declared here (a programming error: declare it first).
    """
    return SETTINGS[name]


def raw(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable's text as set (None when unset), for a reader that passes it on unparsed."""
    setting(name)
    env = os.environ if environ is None else environ
    return env.get(name)


def is_set(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """True when variable ``name`` is in the environment (even empty)."""
    return raw(name, environ) is not None


def set_default(name: str, text: str, environ: MutableMapping[str, str] | None = None) -> None:
    """Put ``text`` as variable ``name`` in ``environ`` (default ``os.environ``: for the processes this one starts)
    unless the variable is set there already, even empty: ``setdefault`` for a declared setting.

    Raises:
        KeyError: ``name`` is not declared.
    """
    if not is_set(name, environ):
        (os.environ if environ is None else environ)[name] = text


def value(name: str, environ: Mapping[str, str] | None = None, default: Any = _UNSET) -> Any:
    """Variable ``name`` parsed by its declared parser; when unset (or empty where its parser says so), ``default``
    if given, else the declared default.

    Args:
        name: the environment variable (declared in :data:`SETTINGS`).
        environ: the environment to read (default ``os.environ``).
        default: overrides the declared default (a layer-dependent default).

    Raises:
        SettingsError: the value is unusable (one line naming the variable).
        KeyError: ``name`` is not declared.
    """
    declared = setting(name)
    text = raw(name, environ)
    parsed = None if text is None else declared.parse(name, text)
    if parsed is None:
        return declared.default if default is _UNSET else default
    return parsed


def closest_key(key: str) -> str | None:
    """The known ``app.config`` key closest to ``key`` (difflib), for "unknown key" warnings; None: none close."""
    import difflib  # here: only a misspelt key needs it, and every serving process imports this module

    suffixes = {known.removeprefix("STACK_"): known for known in CONFIG_KEYS}  # the shared prefix says nothing
    found = difflib.get_close_matches(key.removeprefix("STACK_"), list(suffixes), n=1, cutoff=0.6)
    return suffixes[found[0]] if found else None
