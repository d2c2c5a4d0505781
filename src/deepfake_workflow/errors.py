"""Exceptions the stage programs turn into a one-line message and a non-zero exit."""


class WorkflowError(Exception):
    """Base class: a problem the user can fix (bad input, bad config), not a bug."""


class ConfigError(WorkflowError):
    """A config value is missing, of the wrong type, or out of range."""


class DataError(WorkflowError):
    """A data file (labels, image, archive) is missing or malformed."""


class DownloadError(WorkflowError):
    """A download failed, timed out, or did not match its checksum."""
