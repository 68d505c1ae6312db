"""flask-stack: the host CLI of the python-flask stack (init, run, debug, test, build, deploy, stop)."""

from .paths import stacksettings

#: The stack's version, declared once in image/project/stacksettings/__init__.py (pyproject.toml reads it there too).
__version__ = stacksettings().VERSION
