"""The one exception type the project raises for bad input: files, folders, weights."""


class BrainsegError(Exception):
    """A user-facing error: the message names the file (or folder) and what was expected."""
