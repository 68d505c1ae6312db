"""The one error base class of the CLI.

Every expected failure (not a stack project, port in use, a dependency that does not resolve,
no container engine, ...) is raised as a :class:`CliError` subclass with a one-line, actionable
message; ``flask_stack.cli.main`` catches it once, prints ``flask-stack: <message>`` to stderr and
exits with :attr:`CliError.exit_code`.
"""


class CliError(Exception):
    """An expected failure with a one-line message for the user.

    Attributes:
        exit_code (int): the process exit status the CLI uses for it (default 1).
    """

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code
