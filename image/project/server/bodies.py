"""Request bodies as every production server should hand them to the app (``serving.worker.production_app`` wraps
``wsgi.input`` with these).

* ``CheckedInput``: a body of Content-Length bytes that ends early is werkzeug's ``ClientDisconnected`` (400), not a
  short body taken as complete (gunicorn and granian hand the app what arrived, and no error).
* ``CappedInput``: a chunked body (no Content-Length) past the app's ``MAX_CONTENT_LENGTH`` is werkzeug's
  ``RequestEntityTooLarge`` (413). Werkzeug caps such a body at the limit itself, but stops reading there and hands
  the app the first ``MAX_CONTENT_LENGTH`` bytes as the whole body (with a 200), which is the bug this fixes.
"""

from __future__ import annotations

from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge


class CheckedInput:
    """``wsgi.input`` for a body of ``length`` bytes (Content-Length): raises werkzeug's ``ClientDisconnected`` when
    it ends early (gunicorn and granian both hand the app what arrived, and no error, when the client stops
    sending); reads past ``length`` return b""."""

    def __init__(self, stream, length: int):
        self._stream = stream
        self._left = length

    def read(self, size: int | None = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if size is None or size < 0 else min(size, self._left)
        data = self._stream.read(want)
        while len(data) < want:  # a server may return less than asked before the end
            more = self._stream.read(want - len(data))
            if not more:
                self._left = 0
                raise ClientDisconnected()
            data += more
        self._left -= len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        line = self._stream.readline(self._left if size is None or size < 0 else min(size, self._left))
        self._left -= len(line)
        return line

    def __iter__(self):
        while True:
            chunk = self.read(65536)
            if not chunk:
                return
            yield chunk


class CappedInput:
    """``wsgi.input`` of a chunked body (no Content-Length) for a limit of ``limit`` bytes: raises werkzeug's
    ``RequestEntityTooLarge`` (413) as soon as more than ``limit`` bytes arrive, including when a read ends exactly
    at the limit and one more byte is there (werkzeug's own cap stops reading at the limit and hands the app the
    first ``limit`` bytes as if they were the whole body)."""

    def __init__(self, stream, limit: int):
        self._stream = stream
        self._limit = limit
        self._seen = 0

    def _counted(self, data: bytes) -> bytes:
        self._seen += len(data)
        if self._seen > self._limit or (data and self._seen == self._limit and self._stream.read(1)):
            raise RequestEntityTooLarge()
        return data

    def read(self, size: int | None = -1) -> bytes:
        if size is not None and size >= 0:
            return self._counted(self._stream.read(size))
        chunks = []
        while chunk := self._counted(self._stream.read(65536)):
            chunks.append(chunk)
        return b"".join(chunks)

    def readline(self, size: int | None = -1) -> bytes:
        return self._counted(self._stream.readline(size if size is not None else -1))

    def __iter__(self):
        while chunk := self.read(65536):
            yield chunk
