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
import os
from collections.abc import Mapping
from pathlib import Path
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


def int_in_range(name: str, value: Any, low: int, high: int, *, hint: str = "") -> int:
    """``value`` if it is an int in ``[low, high]``, else a ValueError naming ``name``."""
    if not _is_int(value) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}]{_suffix(hint)}, got {value!r}")
    return value


def non_empty_text(name: str, value: Any, *, hint: str = "") -> str:
    """``value`` if it is a string with something other than spaces in it, else a ValueError naming
    ``name``; an empty path would otherwise mean the current folder."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be text{_suffix(hint)}, got {value!r}")
    if not value.strip():
        raise ValueError(f"{name} must not be empty{_suffix(hint)}, got {value!r}")
    return value


def number_in(name: str, value: Any, low: float, high: float, *, open_low: bool = False, open_high: bool = False,
              hint: str = "") -> float:
    """``value`` as a float if it is a number in the interval from ``low`` to ``high`` (each end
    closed unless ``open_low`` / ``open_high``), else a ValueError naming ``name``."""
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)
    if not number or value < low or value > high or (open_low and value == low) or (open_high and value == high):
        raise ValueError(f"{name} must be a number in {interval}{_suffix(hint)}, got {value!r}")
    return float(value)


def optional_switch(name: str, value: Any, *, none: str = "") -> bool | None:
    """``None``, ``True`` or ``False``; ``none`` says what ``None`` means, for the message."""
    if value is not None and not isinstance(value, bool):
        meaning = f" ({none})" if none else ""
        raise ValueError(f"{name} must be true, false or None{meaning}, got {value!r}")
    return value


def int_list(name: str, value: Any, *, example: str) -> list[int]:
    """``value`` as a list if it is a list, tuple or range of ints (a bare int or a string is a mistake)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, range)) or not all(
            _is_int(item) for item in value):
        raise TypeError(f"{name} must be ints in a list, e.g. {example}, got {value!r}")
    return list(value)


def mapping(name: str, value: Any, *, example: str) -> Any:
    """``value`` if it is a mapping (a dict), else a TypeError showing ``example``."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a dict, e.g. {example}, got {type(value).__name__} {_short(value)}")
    return value


def optional_callable(name: str, value: Any, *, signature: str) -> Any:
    """``None``, or ``value`` if it can be called (as ``signature`` says)."""
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a function {signature} or None, got {type(value).__name__} {_short(value)}")
    return value


def optional_generator(name: str, value: Any) -> Any:
    """``None`` (torch's global random stream), or ``value`` if it is a ``torch.Generator``."""
    import torch

    if value is not None and not isinstance(value, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator (or None for torch's global stream), e.g. "
                        f"torch.Generator().manual_seed(0), got {type(value).__name__}")
    return value


def path(name: str, value: Any) -> Path:
    """``value`` as a ``pathlib.Path`` if it is a str or path, else a TypeError naming ``name``."""
    if not isinstance(value, (str, os.PathLike)) or isinstance(value, str) and not value:
        raise TypeError(f"{name} must be a file path (a str or pathlib.Path), got {type(value).__name__} "
                        f"{_short(value)}")
    return Path(value)


def device(name: str, value: Any) -> Any:
    """``value`` as a ``torch.device`` (``None`` stays ``None``), refusing names torch does not know
    and CUDA devices on a machine without a GPU, which torch would only report at the first tensor."""
    import torch

    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, torch.device)):
        raise ValueError(f"{name} must be a torch device such as 'cpu' or 'cuda', got {value!r}")
    try:
        found = torch.device(value)
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{name} must be a torch device such as 'cpu' or 'cuda', got {value!r} "
                         f"({str(error).splitlines()[0][:120]})") from None
    if found.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{name}={str(found)!r} asks for a GPU, but torch sees none here; use {name}='cpu' "
                         f"(or leave {name} unset to use a GPU only where there is one)")
    return found


def memory_bytes(where: Any = None) -> int | None:
    """Bytes of memory on the device ``where`` (a GPU's, or this machine's RAM); ``None`` if unknown."""
    import torch

    where = torch.device(where or "cpu")
    if where.type == "cuda":
        return torch.cuda.get_device_properties(where).total_memory
    if not hasattr(os, "sysconf"):
        return None
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return None


def fits_in_memory(what: str, needed: float, *, remedy: str, where: Any = None) -> None:
    """Refuse work that would need ``needed`` bytes at once, more than the device ``where`` has:
    better now, with the estimate, than deep inside the allocator or after hours of swapping.

    :param what: what would need the memory, as the start of the message ("this run would hold ...").
    :param remedy: what to do instead.
    """
    available = memory_bytes(where)
    if available is not None and needed > available:
        raise ValueError(f"{what} would need about {needed / 2**30:,.1f} GiB of memory, more than this machine's "
                         f"{available / 2**30:,.1f} GiB: {remedy}")


def _short(value: Any) -> str:
    """``repr(value)`` cut to a readable length for a message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
