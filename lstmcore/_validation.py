"""Argument checks shared by the public API (the layer, training, datasets, interop, the conformance kit)."""
import math
import numbers

import numpy as np


def positive_int(value, name: str) -> int:
    """``value`` as an ``int`` if it is an integer ≥ 1 (``True`` is refused); ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def finite_number(value, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """``value`` as a finite ``float`` (``>= minimum``, or ``> minimum`` if ``strict``); ``TypeError`` for a non-number
    (a string, ``None``, ``True``) and ``ValueError`` otherwise, each naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    number = float(value)
    below = minimum is not None and (number <= minimum if strict else number < minimum)
    if not math.isfinite(number) or below:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}, got {value!r}")
    return number


def random_seed(value, name: str = "seed"):
    """A seed NumPy's ``default_rng`` takes: ``None``, an integer >= 0, a sequence of them, a ``SeedSequence`` or a
    ``Generator``; anything else is a ``TypeError`` or ``ValueError`` naming ``name``."""
    if value is None or isinstance(value, (np.random.Generator, np.random.SeedSequence, np.random.BitGenerator)):
        return value
    entries = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
    for entry in entries:
        if isinstance(entry, (bool, np.bool_)) or not isinstance(entry, numbers.Integral):
            raise TypeError(f"{name} must be None, an integer >= 0 or a sequence of them, got {value!r}")
        if entry < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value
