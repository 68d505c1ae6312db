"""Network helpers for tests; every address is 127.0.0.1 (test traffic never leaves loopback)."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from typing import Callable, TypeVar

T = TypeVar("T")


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]



class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # noqa: D401 - urllib hook: a redirect is the answer
        return None


def http_fetch(url: str, timeout: float = 5.0) -> tuple[int, bytes, dict[str, str]]:
    """GET ``url`` without following redirects: (status, body bytes, headers), error statuses included.

    Raises:
        OSError: nothing answered (refused, reset, timed out).
    """
    try:
        with urllib.request.build_opener(_NoRedirect).open(url, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str, dict[str, str]]:
    """:func:`http_fetch` with the body as text (UTF-8, undecodable bytes replaced).

    Raises:
        OSError: nothing answered (refused, reset, timed out).
    """
    status, body, headers = http_fetch(url, timeout)
    return status, body.decode("utf-8", "replace"), headers


def wait_until(attempt: Callable[[], T | None], timeout: float, *, interval: float = 0.1,
               running: Callable[[], bool] | None = None, errors: tuple[type[BaseException], ...] = (OSError,)) -> T:
    """Call ``attempt()`` every ``interval`` seconds until it returns something other than None; return that.

    ``attempt`` may raise one of ``errors`` (nothing answers yet): that is retried too.

    Raises:
        TimeoutError: ``timeout`` seconds passed (its message: the last error, if any).
        ChildProcessError: ``running()`` returned False (the process that should answer exited).
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        if running is not None and not running():
            raise ChildProcessError(f"the process exited (last error: {last!r})")
        try:
            value = attempt()
            if value is not None:
                return value
        except errors as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"nothing within {timeout:.0f} s (last error: {last!r})")
        time.sleep(interval)
