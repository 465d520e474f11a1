"""One check for integer parameters, shared by the library, the config check and the commands."""

from __future__ import annotations

from numbers import Integral
from typing import Any

__all__ = ["check_int"]


def check_int(
    name: str,
    value: Any,
    low: int = 0,
    *,
    none_ok: bool = False,
    none_text: str = "None",
    error: type[Exception] = ValueError,
) -> Any:
    """``value`` as an ``int`` of at least ``low`` (``None`` passes when ``none_ok``).

    Python and NumPy ints pass; bools, floats and strings do not. Otherwise raises ``error``
    with a message naming ``name``, the range and the value (``none_text``: how the message
    spells None, e.g. ``"null"`` for YAML).

    Examples
    --------
    >>> check_int("n_init", 2, 1)
    2
    >>> check_int("n_init", 0, 1)
    Traceback (most recent call last):
    ...
    ValueError: n_init must be an int in the range [1, inf). Got 0 instead.
    """
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
        extra = f" or {none_text}" if none_ok else ""
        raise error(
            f"{name} must be an int in the range [{low}, inf){extra}. Got {value!r} instead."
        )
    return int(value)
