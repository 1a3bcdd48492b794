"""Errors that carry a message meant for the user: the CLI prints them on one line and
exits non-zero, without a traceback."""


class MorphgenError(Exception):
    """Base class: the message says what is wrong and what to do about it."""


class ModelError(MorphgenError):
    """A morphable model file is missing, unreadable, or inconsistent."""


class ConfigError(MorphgenError):
    """An option or config value is out of range, unknown, or contradicts another."""


class DataError(MorphgenError):
    """An input folder or file (backgrounds, illumination prior, images) is unusable."""
