"""Argument checks shared by the public API (the layer, training, datasets, interop, the conformance kit)."""
import numbers


def positive_int(value, name: str) -> int:
    """``value`` as an ``int`` if it is an integer ≥ 1 (``True`` is refused); ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)
