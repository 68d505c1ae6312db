"""The project's dependency declaration, found and installed the same way by every engine.

* :mod:`stackdeps.detect`: which file declares the project's packages (pure, no subprocess; the runtime's
  ``ModuleNotFoundError`` hint uses it too, so it ships in the deployable image).
* :mod:`stackdeps.resolve`: the project's requirements exported from that file (locking it first with pipenv or
  uv where the format locks), resolved by uv together with the stack's own ranges (``runtime.txt``,
  ``devtools.txt`` in this package) into one hashed set.
* :mod:`stackdeps.build`: the deployable image's ``deps`` stage (``python3 -m stackdeps.build``).

The dev loop (``image/devloop/deps.py``) installs the development set into its dependency layer; the image
installs the runtime set into ``/opt/venv``. Errors are :class:`DepsError` with one line.
"""


class DepsError(Exception):
    """A declaration that cannot be read, locked, resolved or installed; the message is one line."""
