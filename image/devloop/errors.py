"""The dev loop's one error class.

Every expected failure (port in use, a Pipfile that does not resolve, a missing runtime) is raised
as :class:`DevloopError` with a one-line, actionable message; ``devloop.__main__`` logs it once and
exits with :attr:`DevloopError.exit_code`. Nothing else should reach the user as a traceback.
"""


class DevloopError(Exception):
    """An expected failure with a one-line message for the user.

    Attributes:
        exit_code (int): the process exit status to use (default 1).
    """

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class StopRequested(BaseException):
    """Raised by the SIGINT/SIGTERM handler to abandon a blocking step (an install) and exit 0.

    A ``BaseException`` so that ordinary ``except Exception`` blocks do not swallow it.
    """
