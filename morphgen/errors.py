"""Errors that carry a message meant for the user: the CLI prints them on one line and
exits non-zero, without a traceback."""

import math
import sys
from contextlib import contextmanager


class MorphgenError(Exception):
    """Base class: the message says what is wrong and what to do about it."""


class ModelError(MorphgenError):
    """A morphable model file is missing, unreadable, or inconsistent."""


class ConfigError(MorphgenError):
    """An option or config value is out of range, unknown, or contradicts another."""


class DataError(MorphgenError):
    """An input folder or file (backgrounds, illumination prior, images) is unusable."""


@contextmanager
def one_line_errors():
    """For a script's own options: ``with morphgen.one_line_errors(): scene = morphgen.Scene(...)``.
    A MorphgenError raised inside (a bad option or input, whose message says what to fix)
    ends the script as the ``morphgen`` command does: ``Error: <message>`` on stderr and
    exit status 2, without a traceback. Every other exception passes through unchanged
    (a bug's traceback is worth more than a line)."""
    try:
        yield
    except MorphgenError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


#: Set by the console script: processes it starts (spawned workers) print warnings as it does.
ONE_LINE_WARNINGS = "MORPHGEN_ONE_LINE_WARNINGS"


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> str:
    """A warning as the command line shows it (``warnings.formatwarning``): one line of what
    happened, without Python's file, line number and echo of the source line (a skipped
    background image printed three lines, once per worker)."""
    return f"warning: {message}\n"


def shown(value, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for a message that quotes a bad value
    from a user's file (a 400-digit JSON integer, a long list) and must stay one line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def is_finite_number(value) -> bool:
    """`value` is an int or float (not a bool) within float's finite range: what a
    number read from a user's JSON or YAML must be (a 400-digit JSON integer is not)."""
    try:
        return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    except OverflowError:  # an integer beyond float's range
        return False
