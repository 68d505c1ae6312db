"""The settings registry (image/project/stacksettings) is the one place a setting is declared and read from the
environment: README's table is generated from it, no other module reads a stack setting from ``os.environ``, and
the stack's version is declared there once."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REGISTRY = REPO / "image" / "project" / "stacksettings"
sys.path.insert(0, str(REGISTRY.parent))
import stacksettings  # noqa: E402

#: The names whose reads must go through the registry: the stack's own, plus every declared one.
_COVERED = re.compile(r"^(STACK_[A-Z0-9_]+|LOG_[A-Z0-9_]+|PORT|WEB_CONCURRENCY|PROMETHEUS_MULTIPROC_DIR)$")
#: Strings named like a setting that are not environment variables: the deployable image's build argument.
_NOT_SETTINGS = {"STACK_VERSION"}


def _covered(name: str) -> bool:
    return bool(_COVERED.match(name)) or name in stacksettings.SETTINGS


def _is_os_environ(node: ast.AST, environ_names: set[str]) -> bool:
    """``os.environ``, or a name bound to it (``from os import environ``, ``env = os.environ``, ``dict(os.environ)``...)."""
    if isinstance(node, ast.Attribute) and node.attr == "environ" and isinstance(node.value, ast.Name) \
            and node.value.id == "os":
        return True
    return isinstance(node, ast.Name) and node.id in environ_names


def environment_reads(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """``(line, variable)`` of every read of a covered variable from ``os.environ`` in ``source``: ``get``,
    ``pop``, ``setdefault``'s old value is a write and allowed; subscripts in a load, ``in``, ``os.getenv``,
    through any name bound to ``os.environ`` or a copy of it, with the variable given as a literal or a
    module-level string constant."""
    tree = ast.parse(source, filename)
    constants: dict[str, str] = {}
    environ_names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            environ_names |= {alias.asname or alias.name for alias in node.names if alias.name == "environ"}
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                constants.update(dict.fromkeys(names, node.value.value))
            elif any(isinstance(n, ast.Attribute) and n.attr == "environ" for n in ast.walk(node.value)):
                environ_names |= set(names)

    def name_of(node: ast.AST) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return constants.get(node.id)
        return None

    discarded = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}  # os.environ.pop(X)
    found = []
    for node in ast.walk(tree):
        variable = None
        if id(node) in discarded:
            continue
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            if node.func.attr in ("get", "pop") and _is_os_environ(node.func.value, environ_names):
                variable = name_of(node.args[0])
            elif node.func.attr == "getenv" and isinstance(node.func.value, ast.Name) and node.func.value.id == "os":
                variable = name_of(node.args[0])
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
                and _is_os_environ(node.value, environ_names):
            variable = name_of(node.slice)
        elif isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops) \
                and any(_is_os_environ(c, environ_names) for c in node.comparators):
            variable = name_of(node.left)
        if variable and _covered(variable):
            found.append((node.lineno, variable))
    return found


def _python_files() -> list[Path]:
    files = [*sorted((REPO / "image").rglob("*.py")), *sorted((REPO / "src").rglob("*.py"))]
    return [f for f in files if f.parent != REGISTRY and "__pycache__" not in f.parts]


def test_the_scanner_finds_every_kind_of_read():
    source = (
        "import os\nfrom os import environ as env_alias\nNAME = 'STACK_X'\n"
        "a = os.environ.get('STACK_HOST')\n"          # 4
        "b = os.environ['PORT']\n"                     # 5
        "c = os.getenv('LOG_LEVEL')\n"                 # 6
        "d = 'WEB_CONCURRENCY' in os.environ\n"        # 7
        "e = env_alias.get(NAME)\n"                    # 8
        "env = dict(os.environ)\n"
        "f = env['PROMETHEUS_MULTIPROC_DIR']\n"        # 10
        "g = os.environ.pop('STACK_DEVLOOP_FD', None)\n"  # 11
        "os.environ.pop('STACK_DEVLOOP_FD', None)\n"  # a removal, value unused: allowed
        "os.environ['STACK_DEBUG'] = '0'\n"            # a write: allowed
        "h = os.environ.get('HOME')\n"                 # not a setting
    )
    assert sorted(environment_reads(source)) == [(4, "STACK_HOST"), (5, "PORT"), (6, "LOG_LEVEL"),
                                                 (7, "WEB_CONCURRENCY"), (8, "STACK_X"),
                                                 (10, "PROMETHEUS_MULTIPROC_DIR"), (11, "STACK_DEVLOOP_FD")]


def test_no_module_but_the_registry_reads_a_setting_from_the_environment():
    offenders = [f"{path.relative_to(REPO)}:{line}: {name}"
                 for path in _python_files()
                 for line, name in environment_reads(path.read_text(encoding="utf-8"), str(path))]
    assert not offenders, ("read these through the registry (stacksettings.value/raw), not os.environ:\n"
                           + "\n".join(offenders))


def test_every_setting_named_in_the_code_is_declared():
    named = set()
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and re.fullmatch(r"STACK_[A-Z0-9_]+", node.value):
                named.add(node.value)
    undeclared = sorted(named - set(stacksettings.SETTINGS) - _NOT_SETTINGS
                        - {key for key in stacksettings.CONFIG_KEYS})
    assert not undeclared, f"declare these in {REGISTRY.relative_to(REPO)}: {undeclared}"


def test_readme_table_is_the_generated_one():
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "settings-table"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr.strip() + " (then commit README.md)"


def test_every_declared_setting_is_well_formed():
    for setting in stacksettings.SETTINGS.values():
        assert setting.doc and set(setting.layers) <= set(stacksettings.LAYERS), setting.env
        assert setting.layers or setting.read_by, setting.env
        if setting.key:
            assert setting.key.startswith("STACK_") and "runtime" in setting.layers, setting.env
        if setting.default is not None and setting.parse is not stacksettings.parse_raw:
            assert setting.parse(setting.env, str(setting.default) if not isinstance(setting.default, bool)
                                 else ("1" if setting.default else "0")) in (setting.default, None), setting.env


@pytest.mark.parametrize(("value", "expected"), [("1", True), ("TRUE", True), ("on", True), ("no", False),
                                                 ("0", False), ("", None)])
def test_one_truthiness_rule(value, expected):
    assert stacksettings.parse_bool("X", value) is expected
    assert stacksettings.value("STACK_SHOW_URLS", {"STACK_SHOW_URLS": value}) is (True if expected is None
                                                                                   else expected)


def test_bad_value_is_one_line_naming_the_variable():
    with pytest.raises(stacksettings.SettingsError) as info:
        stacksettings.value("STACK_DEBUG_PORT", {"STACK_DEBUG_PORT": "x"})
    assert str(info.value) == "STACK_DEBUG_PORT='x' is not a whole number; unset it or give a whole number such " \
                              "as STACK_DEBUG_PORT=5678"


def test_the_version_is_declared_once():
    version = stacksettings.VERSION
    assert re.search(r"^version: (\S+)$", (REPO / "stack.yaml").read_text(), re.MULTILINE).group(1) == version
    assert re.search(r"^ARG STACK_VERSION=(\S+)$", (REPO / "image" / "project" / "Dockerfile").read_text(),
                     re.MULTILINE).group(1) == version
    literal = re.compile(r"""^\s*(__version__|VERSION)\s*=\s*["']""", re.MULTILINE)
    elsewhere = [str(p.relative_to(REPO)) for p in _python_files() if literal.search(p.read_text(encoding="utf-8"))]
    assert not elsewhere, f"the version is declared in {REGISTRY.name} only: {elsewhere}"
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'dynamic = ["version"]' in pyproject and 'path = "image/project/stacksettings/__init__.py"' in pyproject
    from flask_stack import __version__ as cli_version

    assert cli_version == version


def test_a_zero_body_limit_is_no_limit_not_the_default():
    assert stacksettings.value("STACK_MAX_CONTENT_LENGTH", {"STACK_MAX_CONTENT_LENGTH": "0"}) == 0
    assert stacksettings.value("STACK_MAX_CONTENT_LENGTH", {}) == 16 * 1024 * 1024
    sys.path.insert(0, str(REGISTRY.parent))
    from server.settings import load_settings

    assert load_settings(environ={"STACK_MAX_CONTENT_LENGTH": "0"}).max_content_length is None
