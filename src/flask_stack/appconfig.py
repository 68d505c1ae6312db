"""The production profile of a project's own settings file, for ``flask-stack deploy``.

The runtime (``image/project/server/userconfig.py``) reads ``settings.yaml`` (or ``settings.yml``, or
``settings.toml``) with Dynaconf: a ``default`` section, one section per profile. ``deploy`` puts the
``production`` profile's values into a ConfigMap (the pods read them as ``FLASK_<KEY>`` variables, JSON-encoded, as
Flask's ``Config.from_prefixed_env`` parses them) and refers to a Secret for the keys whose production value is
``null``: those are secrets, never written into a manifest (the Secret is mounted at ``STACK_SECRETS_DIR``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import CliError
from .paths import stacksettings

FILES = stacksettings().USER_CONFIG_FILES  # the runtime's (server.userconfig.FILES)


@dataclass
class ProductionConfig:
    """The production profile of a project's settings file.

    Attributes:
        file (Path | None): the settings file (None: the project has none).
        values (dict[str, Any]): the non-secret values, by config key.
        secret_keys (list[str]): the keys whose production value is null: they come from the Secret.
    """

    file: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)
    secret_keys: list[str] = field(default_factory=list)

    def configmap_data(self) -> dict[str, str]:
        """The ConfigMap's ``data``: each key's value JSON-encoded (``FLASK_<KEY>`` parses it back)."""
        return {key: json.dumps(value, sort_keys=True) for key, value in sorted(self.values.items())}


def production_config(project: Path) -> ProductionConfig:
    """Read the production profile of ``project``'s settings file (Dynaconf merges ``default`` and
    ``production``, as the runtime does).

    Raises:
        CliError: two settings files, or one Dynaconf cannot read (one line).
    """
    found = [project / name for name in FILES if (project / name).is_file()]
    if not found:
        return ProductionConfig()
    if len(found) > 1:
        raise CliError(f"{project}: {' and '.join(p.name for p in found)} both exist; keep one settings file")
    path = found[0]
    from dynaconf import Dynaconf

    try:
        settings = Dynaconf(settings_files=[str(path)], environments=True, env="production",
                            env_switcher="STACK_PROFILE", loaders=[], root_path=str(project))
        merged = settings.as_dict(env="production")
    except Exception as exc:  # noqa: BLE001 - the YAML/TOML parser's or Dynaconf's error: one line
        reason = " ".join(str(exc).split())
        raise CliError(f"{path}: cannot be read for the production profile: {type(exc).__name__}: "
                         f"{reason[:300]}") from None
    values = {k: v for k, v in json.loads(json.dumps(merged, default=str)).items()
              if k != "LOAD_DOTENV" and k.isupper() and k.replace("_", "").isalnum()}
    secret = sorted(k for k, v in values.items() if v is None)
    return ProductionConfig(path, {k: v for k, v in values.items() if v is not None}, secret)


def secret_hint(name: str, keys: list[str]) -> str:
    """The line saying how to create the Secret the Deployment refers to (values never pass through here)."""
    files = " ".join(f"--from-file={key}=./{key.lower()}.txt" for key in keys)
    return (f"the pods read {', '.join(keys)} from the Secret {name}-secrets (production: null in settings.yaml); "
            f"create it before they start: kubectl create secret generic {name}-secrets {files}")
