"""The built-in variant names: tests of the core iterate over these, not over whatever plugins the environment has."""
import lstmcore
from lstmcore.plugins import BUILTIN_SOURCE, registry

BUILTIN_VARIANTS = [name for name in lstmcore.list_variants() if registry.source(name) == BUILTIN_SOURCE]
