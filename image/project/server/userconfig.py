"""The user's own configuration: ``settings.yaml``/``settings.toml`` profiles, ``FLASK_*`` variables and secrets.

A project may hold ``settings.yaml`` (or ``settings.yml``, or ``settings.toml``; one of them) in its project
directory (``STACK_USERAPP_DIR``), with a ``default`` section and one section per profile (``development``,
``testing``, ``production`` or any name); keys are Flask config keys (upper case). The profile is
``STACK_PROFILE`` (the dev loop sets ``development``, ``flask-stack test`` ``testing``, ``serve`` and the deployable
image ``production``; elsewhere ``development``). Dynaconf (``environments=True``) reads the file and merges the
profile's section over ``default`` (a key's whole value is replaced; ``dynaconf_merge`` merges mappings).

Layers, each winning over the one before (:func:`load`):

1. the file: ``default`` then the profile's section;
2. ``FLASK_<KEY>`` variables, read by Flask's own ``Config.from_prefixed_env`` (values parsed as JSON; Flask's CLI
   variables ``FLASK_APP``, ``FLASK_DEBUG``, ``FLASK_RUN_*``... are not config);
3. secrets: a file per key in ``STACK_SECRETS_DIR`` (a mounted Kubernetes Secret or Docker secrets: the file name
   is the key, its content the value, one trailing newline dropped), then ``<KEY>_FILE`` variables naming a
   file, for a ``KEY`` declared in the settings file (any section; ``null`` will do) or one of Flask's own keys.

:func:`apply` puts them in ``app.config``: on an app the stack makes (Blueprint and Appsody shapes) before the
user's module sees it; on the user's own app (``app = Flask(...)``, a factory) when the stack receives it, before
``init_app``, the file's values only where the user's code left Flask's default, the variables and secrets over
it. :func:`validate` then checks the config through the module's ``settings_model`` (a pydantic model whose fields
are config keys) when it has one. A secret's value never leaves this process in a log line (:func:`redact` runs on
every log record once a secret is loaded) and ``repr(app.config)`` shows ``'[secret]'`` for it (:class:`Secret`).

Errors are :class:`ConfigError`, one line naming the key, the profile, the file and what was expected; ``serve``
exits 2 on it, the dev loop answers with its error page until the next save.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import Config, Flask

import stacksettings
from oneline import first_line

from .exceptions import SettingsError

log = logging.getLogger("server")

FILES = stacksettings.USER_CONFIG_FILES
DEFAULT_PROFILE = "development"
#: Flask's CLI variables: ``from_prefixed_env`` would make config keys of them; they are not the app's config.
_FLASK_CLI = re.compile(r"^(APP|DEBUG|ENV|RUN_.*|SKIP_DOTENV)$")
_KEY = re.compile(r"^[A-Z][A-Z0-9_]*$")
MIN_SECRET_LENGTH = 4  # shorter values are not searched for in log lines (they would mangle every line)
MASK = "[secret]"


def stack_env(name: str) -> str | None:
    """The stack setting ``name`` (``STACK_PROFILE``, ``STACK_SECRETS_DIR``) through the registry
    (``stacksettings``), or None when unset or blank."""
    return stacksettings.value(name) or None


class ConfigError(SettingsError):
    """The user's configuration is unusable; ``str(err)`` is one line naming key, profile, file, expectation.

    Attributes:
        exit_status (int): 2, what ``serve`` exits with.
    """

    exit_status = 2


class Secret(str):
    """A config value read from a secret: a ``str`` in every use (Flask signs sessions with it), whose ``repr`` is
    ``'[secret]'`` (``repr(app.config)``, the debugger's view of it, ``%r`` in a log line)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(MASK)


@dataclass
class UserConfig:
    """The user's configuration as loaded.

    Attributes:
        profile (str): the profile in force.
        file (str | None): the settings file read (absolute path), or None.
        profiles (list[str]): the file's sections.
        values (dict[str, Any]): the file's merged values (layer 1).
        overrides (dict[str, Any]): ``FLASK_*`` variables and secrets (layers 2 and 3).
        sources (dict[str, str]): where each key's value came from ("settings.yaml [production]", "FLASK_X"...).
        secret_keys (set[str]): the keys whose value is a secret.
    """

    profile: str
    file: str | None = None
    profiles: list[str] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    secret_keys: set[str] = field(default_factory=set)

    def source(self, key: str) -> str:
        """Where ``key``'s value came from (``"the app's code"`` when none of the layers set it)."""
        return self.sources.get(key, "the app's code")

    def summary(self) -> str:
        """One line for the startup log: profile, file, key names and where they came from; never a value."""
        where = os.path.basename(self.file) if self.file else "no settings file"
        env = sorted(k for k, s in self.sources.items() if s.startswith("FLASK_"))
        parts = [f"profile {self.profile!r} ({where})", f"{len(self.values)} keys from the file"]
        if env:
            parts.append(f"from FLASK_ variables: {', '.join(env)}")
        if self.secret_keys:
            parts.append(f"secrets: {', '.join(sorted(self.secret_keys))}")
        return "config: " + "; ".join(parts)


def find_file(project_dir: str | os.PathLike[str] | None) -> str | None:
    """The settings file in ``project_dir`` (None: none there).

    Raises:
        ConfigError: more than one of ``settings.yaml``, ``settings.yml``, ``settings.toml`` is there.
    """
    if not project_dir:
        return None
    found = [os.path.join(project_dir, n) for n in FILES if os.path.isfile(os.path.join(project_dir, n))]
    if len(found) > 1:
        raise ConfigError(f"{project_dir}: {' and '.join(os.path.basename(f) for f in found)} both exist; keep one "
                          f"settings file")
    return os.path.abspath(found[0]) if found else None


def read_sections(path: str) -> dict[str, dict[str, Any]]:
    """The sections of settings file ``path`` as parsed (for their names and keys; Dynaconf merges the values).

    Raises:
        ConfigError: the file is malformed, or its top level is not sections of ``KEY: value`` pairs.
    """
    name = os.path.basename(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
        if path.endswith(".toml"):
            import tomllib

            data = tomllib.loads(raw.decode("utf-8"))
        else:
            import yaml  # PyYAML, a dependency of flasgger

            data = yaml.safe_load(raw)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except Exception as exc:  # noqa: BLE001 - yaml.YAMLError, tomllib.TOMLDecodeError: one line with the position
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or first_line(exc)
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        if context and start is not None:
            reason += f" ({context} from line {start.line + 1})"
        raise ConfigError(f"{path}: malformed {'TOML' if path.endswith('.toml') else 'YAML'}{where}: {reason}; "
                          f"expected a 'default' section and one per profile") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be sections (default:, development:, production:...), "
                          f"not a {type(data).__name__}")
    for section, body in data.items():
        if body is not None and not isinstance(body, dict):
            raise ConfigError(f"{path}: top-level key {section!r} must be a section of KEY: value pairs (put "
                              f"{str(section).upper()} under default: or a profile); {name} holds profiles")
    return {str(k): dict(v or {}) for k, v in data.items()}


def _merged(path: str, profile: str) -> dict[str, Any]:
    """``default`` merged with ``profile``'s section of ``path``, by Dynaconf."""
    from dynaconf import Dynaconf

    try:
        # loaders=[]: no DYNACONF_* variables (FLASK_* is this stack's prefix); env_switcher: ENV_FOR_DYNACONF ignored
        settings = Dynaconf(settings_files=[path], environments=True, env=profile, env_switcher="STACK_PROFILE",
                            loaders=[], load_dotenv=False, root_path=os.path.dirname(path))
        values = settings.as_dict(env=profile)
    except Exception as exc:  # noqa: BLE001 - Dynaconf's own errors (a bad @token...): one line
        raise ConfigError(f"{path}: profile {profile!r}: {type(exc).__name__}: {first_line(exc)}") from None
    return {k: v for k, v in values.items() if k != "LOAD_DOTENV" and _KEY.match(k)}


def load(project_dir: str | os.PathLike[str] | None, root_path: str | None = None) -> UserConfig:
    """Load the user's configuration for the profile in force (see the module docstring).

    Args:
        project_dir: the project directory (``STACK_USERAPP_DIR``); None: no settings file.
        root_path: the directory Flask's ``Config`` is relative to (unused by the layers; default the project's).

    Returns:
        UserConfig: the layers, with the secrets registered for :func:`redact`.

    Raises:
        ConfigError: a malformed or unreadable settings file, an unreadable secret, an unusable STACK_SECRETS_DIR.
    """
    cfg = UserConfig(profile=stack_env("STACK_PROFILE") or DEFAULT_PROFILE)
    cfg.file = find_file(project_dir)
    declared: set[str] = set(Flask.default_config)
    if cfg.file is not None:
        sections = read_sections(cfg.file)
        cfg.profiles = list(sections)
        name = os.path.basename(cfg.file)
        for section in sections.values():
            declared.update(str(k).upper() for k in section)
        if cfg.profile not in sections and cfg.profile != "default":
            log.warning("%s has no section %r (it has %s): using its default section", name, cfg.profile,
                        ", ".join(sections) or "none")
        cfg.values = _merged(cfg.file, cfg.profile)
        own = {str(k).upper() for k in sections.get(cfg.profile, {})}
        for key in cfg.values:
            cfg.sources[key] = f"{name} [{cfg.profile if key in own else 'default'}]"
    _from_environment(cfg, root_path or str(project_dir or os.getcwd()))
    _from_secrets(cfg, declared)
    return cfg


def _from_environment(cfg: UserConfig, root_path: str) -> None:
    """Layer 2: ``FLASK_<KEY>`` through Flask's ``Config.from_prefixed_env``, over the file's values."""
    scratch = Config(root_path, cfg.values)
    try:
        scratch.from_prefixed_env()
    except (KeyError, TypeError) as exc:  # FLASK_A__B with no mapping A
        raise ConfigError(f"a FLASK_ variable sets a key inside {exc} which is not a mapping in profile "
                          f"{cfg.profile!r}") from None
    prefixed = {name[len("FLASK_"):].split("__", 1)[0] for name in os.environ if name.startswith("FLASK_")}
    for key in sorted(prefixed):
        if key in scratch and not _FLASK_CLI.match(key):
            cfg.overrides[key] = scratch[key]
            cfg.sources[key] = f"FLASK_{key}"


def _read_secret(path: str, what: str, cfg: UserConfig, key: str) -> Secret:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise ConfigError(f"{key} (profile {cfg.profile!r}): {what} cannot be read: {reason}") from None
    return Secret(text[:-2] if text.endswith("\r\n") else text[:-1] if text.endswith("\n") else text)


def _from_secrets(cfg: UserConfig, declared: set[str]) -> None:
    """Layer 3: STACK_SECRETS_DIR's files, then ``<KEY>_FILE`` variables."""
    directory = stack_env("STACK_SECRETS_DIR")
    found: dict[str, tuple[Secret, str]] = {}
    if directory is not None:
        if not os.path.isdir(directory):
            raise ConfigError(f"STACK_SECRETS_DIR={directory} is not a directory (mount the Secret there, or unset "
                              f"it)")
        ignored = []
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if name.startswith(".") or not os.path.isfile(path):
                continue  # a mounted Secret's ..data links, the service account's directory...
            if not _KEY.match(name):
                ignored.append(name)
                continue
            found[name] = (_read_secret(path, f"secret file {path}", cfg, name), f"secret file {path}")
        if ignored:
            log.warning("STACK_SECRETS_DIR=%s: ignored %s: a file's name must be an upper-case config key "
                        "(SECRET_KEY)", directory, ", ".join(ignored))
    for key in sorted(declared):
        path = os.environ.get(f"{key}_FILE", "").strip()
        if path:
            found[key] = (_read_secret(path, f"{key}_FILE={path}", cfg, key), f"{key}_FILE={path}")
    for key, (value, source) in found.items():
        cfg.overrides[key] = value
        cfg.sources[key] = source
        cfg.secret_keys.add(key)
        register_secret(value)


# --- applying and validating -----------------------------------------------------------------------------------


def apply(app: Flask, cfg: UserConfig, stack_made: bool) -> None:
    """Put ``cfg`` into ``app.config``: on an app the stack made, every layer; on the user's own app, the file's
    values where the app's code left Flask's default (or no value), the variables and secrets over everything."""
    defaults = Flask.default_config
    for key, value in cfg.values.items():
        if stack_made or key not in app.config or app.config[key] == defaults.get(key, None):
            app.config[key] = value
    app.config.update(cfg.overrides)


def validate(app: Flask, cfg: UserConfig, model: Any, module_name: str) -> None:
    """Validate ``app.config`` through the pydantic model ``model`` (the module's ``settings_model``: its fields are
    config keys, upper case); the validated values, and the model's defaults, go back into ``app.config`` (secrets
    stay :class:`Secret`).

    Raises:
        ConfigError: ``model`` is not a pydantic model, or a value does not fit (one line: key, profile, source,
            expected type; never the value).
    """
    if not hasattr(model, "model_validate") or not hasattr(model, "model_fields"):
        raise ConfigError(f"{module_name}.settings_model must be a pydantic BaseModel subclass, not "
                          f"{type(model).__name__}")
    fields = {(info.alias or name): (name, info) for name, info in model.model_fields.items()}
    data = {key: app.config[key] for key in fields if key in app.config}
    try:
        result = model.model_validate(data)
    except Exception as exc:  # noqa: BLE001 - pydantic.ValidationError (pydantic is the user's dependency)
        errors = exc.errors(include_input=False) if hasattr(exc, "errors") else []
        if not errors:
            raise ConfigError(f"{module_name}.settings_model: {type(exc).__name__}: "
                              f"{redact(first_line(exc))}") from None
        first = errors[0]
        key = str(first["loc"][0]) if first.get("loc") else "?"
        info = fields.get(key, (key, None))[1]
        expected = _type_name(getattr(info, "annotation", None))
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{key} in profile {cfg.profile!r} from {cfg.source(key)}: expected {expected}: "
                          f"{redact(str(first['msg']))}{more}") from None
    for key, (name, _) in fields.items():  # the model's defaults too
        value = getattr(result, name)
        app.config[key] = Secret(value) if key in cfg.secret_keys and isinstance(value, str) else value


def _type_name(annotation: Any) -> str:
    if annotation is None:
        return "a valid value"
    return getattr(annotation, "__name__", None) if isinstance(annotation, type) else str(annotation).replace(
        "typing.", "")


# --- redaction -------------------------------------------------------------------------------------------------

_secrets: set[str] = set()
_lock = threading.Lock()
_base_factory: Any = None


def register_secret(value: str) -> None:
    """Keep ``value`` out of this process's log lines from now on (values shorter than ``MIN_SECRET_LENGTH``
    characters are not searched for)."""
    global _base_factory
    if len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        _secrets.add(str(value))
        if _base_factory is None:
            _base_factory = logging.getLogRecordFactory()
            logging.setLogRecordFactory(_redacting_record)


def redact(text: str, escape: Callable[[str], str] | None = None) -> str:
    """``text`` with every registered secret value (``escape(value)`` when given, e.g. ``html.escape``) replaced by
    ``[secret]``."""
    for value in sorted(_secrets, key=len, reverse=True):
        shown = escape(value) if escape is not None else value
        if shown in text:
            text = text.replace(shown, MASK)
    return text


def _redacting_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
    """The log record factory once a secret is loaded: the message (and traceback) with secrets masked."""
    record = _base_factory(*args, **kwargs)
    if not _secrets:
        return record
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format string: leave it to the handler's own error report
        return record
    masked = redact(message)
    if masked != message:
        record.msg, record.args = masked, ()
    if record.exc_info and not record.exc_text:
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record
