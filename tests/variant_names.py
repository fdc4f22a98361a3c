"""The built-in variant names: tests of the core iterate over these, not over whatever plugins the environment has."""
import lstmcore
from lstmcore import GatedCell
from lstmcore.plugins import BUILTIN_SOURCE, registry

BUILTIN_VARIANTS = [name for name in lstmcore.list_variants() if registry.source(name) == BUILTIN_SOURCE]

#: The variants that the costliest per-variant tests run in the fast tier (``pytest -m "not slow"``): the plain cell,
#: one with peepholes and one coupled; every other variant runs in the slow tier only (plain ``pytest``, as CI does), so
#: the fast tier does not grow with each variant that is added.
FAST_TIER_VARIANTS = ("vanilla", "peephole", "coupled")


def every_variant(names):
    """``names`` as parameters, those outside ``FAST_TIER_VARIANTS`` marked slow."""
    import pytest

    return [pytest.param(name, id=name, marks=() if name in FAST_TIER_VARIANTS else pytest.mark.slow)
            for name in names]


#: Those of the gated-cell family (the Odyssey specs): the tests of its options, activations and NumPy reference.
GATED_VARIANTS = [name for name in BUILTIN_VARIANTS if isinstance(lstmcore.get_variant(name), GatedCell)]
