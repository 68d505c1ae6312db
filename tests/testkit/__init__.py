"""Helpers shared by the stack's test packages (importable as ``testkit``: pytest puts ``tests/`` on sys.path)."""
