"""Argument checks shared by the whole package, so that every bad value gets the same kind of message.

Each check returns the value it accepted (as the type it promises), or raises a ``ValueError``
that names the argument, says what was expected and shows what was given:

    >>> positive_int("steps", 3)
    3
    >>> positive_int("steps", 0, hint="updates to run")
    Traceback (most recent call last):
    ...
    ValueError: steps must be a positive int (updates to run), got 0
    >>> non_negative_int("eval_every", True)
    Traceback (most recent call last):
    ...
    ValueError: eval_every must be a non-negative int, got True

``True`` and ``False`` are refused where an int is expected: ``bool`` is an ``int`` to
Python, but a switch given for a count is a mistake in a configuration, never a count.
"""

from __future__ import annotations

import math
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _suffix(hint: str) -> str:
    return f" ({hint})" if hint else ""


def positive_int(name: str, value: Any, *, hint: str = "") -> int:
    """``value`` if it is an int of at least 1, else a ValueError naming ``name``."""
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int{_suffix(hint)}, got {value!r}")
    return value


def non_negative_int(name: str, value: Any, *, hint: str = "") -> int:
    """``value`` if it is an int of at least 0, else a ValueError naming ``name``."""
    if not _is_int(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative int{_suffix(hint)}, got {value!r}")
    return value


def optional_positive_int(name: str, value: Any, *, hint: str = "") -> int | None:
    """``None``, or ``value`` if it is an int of at least 1."""
    if value is None:
        return None
    if not _is_int(value) or value < 1:
        raise ValueError(f"{name} must be a positive int or None{_suffix(hint)}, got {value!r}")
    return value


def positive_number(name: str, value: Any, *, hint: str = "") -> float:
    """``value`` as a float if it is a finite number above 0, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be positive, a finite number{_suffix(hint)}, got {value!r}")
    return float(value)


def non_negative_number(name: str, value: Any, *, hint: str = "") -> float:
    """``value`` as a float if it is a finite number of at least 0, else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{name} must be non-negative, a finite number{_suffix(hint)}, got {value!r}")
    return float(value)


def switch(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``; 1 or "false" from a file would otherwise count as true."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value
