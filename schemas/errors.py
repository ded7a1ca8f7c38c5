"""The one exception type for user-facing errors: the CLI prints its message and exits non-zero."""


class RestemError(Exception):
    """An error the user can fix; the message names the file, row or field and the fix."""
