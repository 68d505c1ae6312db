"""The stack runtime's version (``stack.yaml``'s ``version``); imported by ``server`` and its modules without a cycle."""

__version__ = "0.4.0"
