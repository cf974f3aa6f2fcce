"""Errors that mean "the user must fix something", as opposed to bugs.

Every layer raises :class:`UserError` (or a subclass) for bad input; the CLI prints its message as
one line and exits with code 2, and Dagster shows it as a failure without a Python traceback in
the message. Messages must say what is wrong, where, and how to fix it, and never contain secrets.

Why it works this way: docs/architecture.md, "Errors and crash testing".
"""


class UserError(Exception):
    """A mistake in input, configuration or invocation that the user can fix.

    Attributes:
        message: One line: what is wrong, where (path, field, line) and how to fix it.
    """

    exit_code = 2
    #: Whether the same operation, unchanged, can succeed later (see :class:`TransientError`).
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputFileError(UserError):
    """A book, section, ontology or result file that cannot be used as it is."""


class ConfigError(UserError):
    """A bad option, model name, backend choice or missing credential."""


class PreflightError(UserError):
    """A request that the API would reject (size, custom_id, limits) caught before sending."""


class BudgetExceededError(UserError):
    """The pre-flight cost estimate is above the configured budget cap."""


class TransientError(UserError):
    """A failure of the environment, not of the input: retrying the same call later can work.

    Network errors, 429/5xx answers that outlasted the client's own retries, a create that used
    all its attempts, a DuckDB file locked by another process for longer than the wait limit.
    """

    retryable = True
