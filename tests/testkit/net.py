"""Network helpers for tests; every address is 127.0.0.1 (test traffic never leaves loopback)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: D401 - urllib hook: a redirect is the answer
        return None


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str, dict[str, str]]:
    """GET ``url`` without following redirects: (status, body as text, headers), error statuses included.

    Raises:
        OSError: nothing answered (refused, reset, timed out).
    """
    try:
        with urllib.request.build_opener(_NoRedirect).open(url, timeout=timeout) as response:
            return response.status, response.read().decode("utf-8", "replace"), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace"), dict(exc.headers)
