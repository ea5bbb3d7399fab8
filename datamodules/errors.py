"""Errors about data that a user can fix; each message names the file or setting and how to fix it."""


class DataError(ValueError):
    """The data on disk, or the data settings, cannot be used."""


class DataNotFoundError(DataError, FileNotFoundError):
    """The dataset's files are not where the config says, and could not be downloaded."""


class DataWarning(UserWarning):
    """Data left out that a user should know of (unreadable files); shown as its message alone, by cli.py."""
