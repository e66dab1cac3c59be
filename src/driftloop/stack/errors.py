"""Why the stack stops."""


class StackError(RuntimeError):
    """The stack cannot start or stopped; the message names the component and its log."""


class Stop(BaseException):
    """SIGTERM or SIGINT arrived: stop everything (a BaseException, so nothing swallows it)."""
