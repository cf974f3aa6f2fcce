"""Errors that mean "the user must fix something", as opposed to bugs.

Every layer raises :class:`UserError` (or a subclass) for bad input; the CLI prints its message as
one line and exits with code 2, and Dagster shows it as a failure without a Python traceback in
the message. Messages must say what is wrong, where, and how to fix it, and never contain secrets.
"""


class UserError(Exception):
    """A mistake in input, configuration or invocation that the user can fix.

    Attributes:
        message: One line: what is wrong, where (path, field, line) and how to fix it.
    """

    exit_code = 2

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
