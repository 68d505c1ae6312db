"""A project for each dependency format: an app importing a package the stack lacks (markdown), pinning two the
stack's lock has newer (PyYAML 6.0.2, mistune 3.3.3), with a test needing a development-only package (pytest-mock)."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

#: The formats, as :func:`make_project` takes them (uv.lock: pyproject.toml locked by uv first).
FORMATS = ("requirements.txt", "pyproject.toml", "uv.lock", "Pipfile")
#: What GET /versions answers when the project's versions are served.
EXPECTED = {"html": "<p><em>hi</em></p>", "markdown": "3.7", "yaml": "6.0.2", "mistune": "3.3.3"}
RUNTIME = ["markdown==3.7", "PyYAML==6.0.2", "mistune==3.3.3"]
DEV = "pytest-mock==3.14.0"
APP = textwrap.dedent("""\
    import markdown
    from flask import Flask

    app = Flask(__name__)


    @app.get("/versions")
    def versions():
        import importlib.metadata

        import mistune
        import yaml
        extra = {}
        try:
            import inflection
            extra["inflection"] = inflection.__version__
        except ImportError:
            pass
        return {"html": markdown.markdown("*hi*"), "markdown": importlib.metadata.version("markdown"),
                "yaml": yaml.__version__, "mistune": mistune.__version__, **extra}
""")
TEST = textwrap.dedent("""\
    def test_dev_only_package(mocker):
        import markdown
        spy = mocker.spy(markdown, "markdown")
        assert markdown.markdown("*x*") == "<p><em>x</em></p>" and spy.call_count == 1
""")


def _uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def make_project(root: Path, kind: str) -> Path:
    """Lay out the markdown app declaring its packages in ``kind``'s format."""
    root.mkdir(parents=True)
    (root / "app.py").write_text(APP)
    (root / "tests").mkdir()
    (root / "tests" / "test_app.py").write_text(TEST)
    if kind == "requirements.txt":
        (root / "requirements.txt").write_text("".join(f"{r}\n" for r in RUNTIME))
        (root / "requirements-dev.txt").write_text(f"-r requirements.txt\n{DEV}\n")
    elif kind == "Pipfile":
        packages = "".join(f'{r.split("==")[0]} = "=={r.split("==")[1]}"\n' for r in RUNTIME)
        (root / "Pipfile").write_text(f'[packages]\n{packages}\n[dev-packages]\npytest-mock = "==3.14.0"\n')
    else:
        deps = ", ".join(f'"{r}"' for r in RUNTIME)
        (root / "pyproject.toml").write_text(f'[project]\nname = "demo"\nversion = "1.0"\nrequires-python = ">=3.11"\n'
                                             f'dependencies = [{deps}]\n\n[dependency-groups]\ndev = ["{DEV}"]\n')
        if kind == "uv.lock":
            subprocess.run([_uv(), "lock", "--quiet", "--project", str(root)], check=True, timeout=300)
    return root
