"""The stack runtime's version, declared once in ``stacksettings`` (stack.yaml repeats it for Appsody; a test compares
them); imported by ``server`` and its modules without a cycle."""

from stacksettings import __version__

__all__ = ["__version__"]
