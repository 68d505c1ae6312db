"""The settings registry's parsers (``stacksettings``): one per type, ``parse(name, value) -> value``, each raising
:class:`SettingsError` with one line naming ``name``; standard library only. A parser returning None means "the
setting's default" (an empty string where that is what unset means); a number given as an empty string is an error
(unset the variable instead): gunicorn itself would fail on ``WEB_CONCURRENCY=''`` with a traceback.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MIB = 1024 * 1024
#: Largest request body by default, bytes (STACK_MAX_CONTENT_LENGTH; the front's and the Ingress's limit too).
DEFAULT_MAX_CONTENT_LENGTH = 16 * MIB
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class SettingsError(ValueError):
    """A stack setting has a value that cannot be used; ``str(err)`` is one line naming the variable and what to
    give instead. The runtime's ``server.exceptions.SettingsError`` derives from it."""


def parse_bool(name: str, value: Any) -> bool | None:
    """``1 true yes on`` / ``0 false no off`` (any case) or a bool; an empty string is None (the default).

    Raises:
        SettingsError: anything else.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if not text:
        return None
    raise SettingsError(f"{name}={value!r} is not a boolean; use 1 or 0")


def parse_int(name: str, value: Any, minimum: int, maximum: int | None = None, example: int | None = None) -> int:
    """A whole number in ``[minimum, maximum]``. An empty string is an error (unset the variable instead).

    Raises:
        SettingsError: not a whole number, or out of range.
    """
    try:
        number = int(str(value).strip()) if not isinstance(value, int) or isinstance(value, bool) else value
    except (TypeError, ValueError):
        hint = f"; unset it or give a whole number such as {name}={example if example is not None else minimum}"
        raise SettingsError(f"{name}={value!r} is not a whole number{hint}") from None
    if number < minimum or (maximum is not None and number > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise SettingsError(f"{name}={value!r} must be {bounds}")
    return number


def parse_seconds(name: str, value: Any, minimum: float = 0.0, inclusive: bool = True,
                  maximum: float | None = None) -> float:
    """A number of seconds ``>= minimum`` (``> minimum`` unless ``inclusive``), at most ``maximum``. An empty string
    is an error (unset the variable instead).

    Raises:
        SettingsError: not a number, or out of range.
    """
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name}={value!r} is not a number of seconds") from None
    if number != number or (inclusive and not number >= minimum):
        raise SettingsError(f"{name}={value!r} must be at least {minimum:g}")
    if not inclusive and not number > minimum:
        raise SettingsError(f"{name}={value!r} must be greater than {minimum:g}")
    if maximum is not None and number > maximum:
        raise SettingsError(f"{name}={value!r} must be at most {maximum:g} seconds")
    return number


def parse_choice(name: str, value: Any, choices: tuple[str, ...], what: str = "a choice") -> str | None:
    """One of ``choices`` (case-insensitive; returned lower-case); an empty string is None (the default).

    Raises:
        SettingsError: anything else (one line: ``NAME='x' is not <what>; use a or b``).
    """
    text = str(value).strip().lower()
    if not text:
        return None
    if text not in choices:
        raise SettingsError(f"{name}={value!r} is not {what}; use {', '.join(choices[:-1])} or {choices[-1]}")
    return text


def parse_level(name: str, value: Any) -> str | None:
    """A ``logging`` level name (returned upper-case); an empty string is None (the default, INFO).

    Raises:
        SettingsError: not a level name.
    """
    level = str(value).strip().upper()
    if not level:
        return None
    if not isinstance(logging.getLevelName(level), int):
        raise SettingsError(f"{name}={value!r} is not a log level; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9._~!$&'()*+,;=:@-]+$")  # RFC 3986 pchar, unencoded (no "%", no "/")


def parse_url_prefix(name: str, value: Any) -> str:
    """A URL path prefix such as ``/your/path`` (returned without a trailing slash); an empty string or ``/`` is
    "" (the root, no prefix). The one check of a prefix (runtime, dev loop, ``flask-stack deploy``).

    Raises:
        SettingsError: no leading slash, an empty, ``.`` or ``..`` segment, or a character not allowed in a URL
            path.
    """
    text = str(value).strip()
    if text in ("", "/"):
        return ""
    if not text.startswith("/"):
        raise SettingsError(f"{name}={value!r} must start with a slash, e.g. {name}=/{text.strip('/') or 'app'}")
    segments = text.rstrip("/").split("/")[1:]
    for segment in segments:
        if segment in ("", ".", "..") or not _PREFIX_SEGMENT.match(segment):
            raise SettingsError(f"{name}={value!r} is not a URL path like /your/path (segment {segment!r})")
    return "/" + "/".join(segments)


_HOST_NAME = re.compile(r"\.?[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")


def parse_hosts(name: str, value: Any) -> tuple[str, ...] | None:
    """Host names, comma- or space-separated (a list or tuple is taken as is): ``example.com``, ``.example.com``
    (the domain and its subdomains), an IPv4 address; no port, no scheme (Werkzeug's check cannot match IPv6
    addresses). Returned lower-case; empty or None: None (any host).

    Raises:
        SettingsError: a name with a scheme, port, path or other invalid character.
    """
    if value is None:
        return None
    items = [str(v).strip() for v in value] if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
    hosts = tuple(item.lower() for item in items if item)
    for host in hosts:
        if not _HOST_NAME.fullmatch(host):
            raise SettingsError(f"{name}={value!r}: {host!r} is not a host name; give names only, comma-separated, "
                                f"e.g. {name}=shop.example.com,.example.org")
    return hosts or None


def parse_text(name: str, value: Any) -> str | None:
    """Any text, stripped; an empty string (or None) is None (the default)."""
    del name
    text = "" if value is None else str(value).strip()
    return text or None


def parse_raw(name: str, value: Any) -> str | None:
    """The text as given (a module name may be ``""`` on purpose: STACK_USERAPP); None stays None."""
    del name
    return None if value is None else str(value).strip()


def parse_body_limit(name: str, value: Any) -> int:
    """A body limit in bytes, ``0``: no limit.

    Raises:
        SettingsError: not a whole number >= 0.
    """
    return parse_int(name, value, 0, example=DEFAULT_MAX_CONTENT_LENGTH)
