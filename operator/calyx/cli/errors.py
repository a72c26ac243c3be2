"""The CLI's one error type: its message is printed as one line, and the exit code is 1."""


class CliError(Exception):
    pass
