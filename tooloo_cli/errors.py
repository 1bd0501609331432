"""Errors that reach the user as one clear line and an exit code, never as a traceback.

    raise ToolooError("port 3003 is taken by pid 4242 (node)")        # exit 1
    raise UsageError("unknown service 'bugdet'; did you mean 'budget'?")  # exit 2

Kept free of imports so the CLI can catch these before anything heavy is loaded.
"""


class ToolooError(Exception):
    """A failure the user should read: exit code 1."""

    exit_code = 1


class UsageError(ToolooError):
    """Bad input or configuration: exit code 2."""

    exit_code = 2
