"""The hooks a lstmcore plugin can implement (pluggy). Mark implementations with ``lstmcore.hookimpl``.

Each hook takes a ``register`` callback and is called once per plugin: ``register_variants`` (recurrent cells),
``register_groups`` (named lists of variants for studies) and ``register_datasets`` (dataset loaders). A plugin
implements any of them; the built-ins (``lstmcore.variants``, ``lstmcore.datasets``) register through the same hooks.
``lstmcore plugins`` lists what each plugin registered."""
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


@hookspec
def register_groups(register):
    """Register named groups of variants by calling ``register(name, variants, description="")`` once for each.

    A group is a name for a list of variant names, in order; an ablation study's ``--variants`` (or ``[study]
    variants``) expands it, so ``--variants odyssey`` runs the paper's nine configurations. The first variant of a group
    is the natural baseline. The variants may come from any plugin: they are looked up when a study runs, not when the
    group is registered. A name taken twice (by a group, or by a variant) is an error that names both sources.

    Example::

        import lstmcore

        @lstmcore.hookimpl
        def register_groups(register):
            register("gates", ["peephole", "nig", "nfg", "nog"], description="V and its three gate removals")
    """


@hookspec
def register_datasets(register):
    """Register datasets by calling ``register(name, loader)`` once for each.

    ``loader(**options)`` builds a ``lstmcore.datasets.Dataset`` (train, valid and test ``Split`` s); its keyword
    arguments are the dataset's options (``--dataset-option key=value``, a study's ``[dataset]`` table). It is called
    afresh in every worker process of a study, so it should be cheap to call again (read a cache, or build from a
    seed). Then ``lstmcore.datasets.load_dataset(name, **options)`` and ``lstmcore ablate --dataset name`` find it.
    A name is lower-case letters, digits, ``_`` and ``-`` (no ``:``, which marks the ``package.module:function``
    shortcut that needs no plugin). A name taken twice is an error that names both sources.

    Example::

        import numpy as np
        import lstmcore
        from lstmcore.datasets import from_sequences

        def running_sum(n=200, seed=0):
            rng = np.random.default_rng(seed)
            xs = [rng.normal(size=(int(rng.integers(5, 20)), 1)) for _ in range(n)]
            return from_sequences(xs, [np.cumsum(x, axis=0) for x in xs], output="linear", seed=seed)

        @lstmcore.hookimpl
        def register_datasets(register):
            register("running-sum", running_sum)
    """
