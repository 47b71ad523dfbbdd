"""The kit's errors. Each message is one line saying what is wrong and what to do."""


class StackError(Exception):
    """A component cannot be started or reached; the message is one line saying what to do."""


class SettingError(StackError):
    """A setting (environment variable) has a value the kit refuses; exit status 2."""


class ServiceError(RuntimeError):
    """A service did not start or could not be found."""
