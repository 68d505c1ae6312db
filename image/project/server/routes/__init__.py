"""The stack's own HTTP endpoints: ``health`` (``/health``, ``/health/live|ready|started``) and ``prometheus``
(``/metrics``, plus ``track_requests`` for Appsody-era user code)."""
