"""The hooks a lstmcore plugin can implement (pluggy). Mark implementations with ``lstmcore.hookimpl``."""
import pluggy

PROJECT_NAME = "lstmcore"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_variants(register):
    """Register recurrent-cell variants by calling ``register(variant)`` once for each.

    ``variant`` is a ``lstmcore.Variant``: most often a ``lstmcore.GatedCell`` spec, which runs on the compiled kernel
    with no code of its own, or a subclass that implements ``forward`` and ``backward`` over a whole sequence.
    Registering a name that is already taken is an error that names both sources.

    Example, in a plugin module listed under the entry-point group ``lstmcore``::

        import lstmcore

        @lstmcore.hookimpl
        def register_variants(register):
            register(lstmcore.GatedCell("peephole-hardsig", peepholes=True, gate_activation="hard_sigmoid",
                                        description="V with hard-sigmoid gates"))
    """
