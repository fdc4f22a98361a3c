"""The built-in variants of "LSTM: A Search Space Odyssey" (Greff et al., 2017) and their group ``odyssey``,
registered through the same ``register_variants`` and ``register_groups`` hooks as any third-party plugin. Installed as
``lstmcore.variants``."""
from lstmcore.hookspecs import hookimpl
from lstmcore.variant import GatedCell

from .lnlstm import LayerNormLSTM
from .slstm import SLSTM

BUILTIN_VARIANTS = (
    GatedCell("vanilla", description="No peepholes (the paper's NP); the PyTorch, Keras and ONNX default LSTM."),
    GatedCell("peephole", peepholes=True, description="The paper's vanilla LSTM V: three gates with peepholes."),
    GatedCell("coupled", peepholes=True, coupled=True, forget_gate=False,
              description="Coupled input and forget gate (CIFG): f = 1 - i."),
    GatedCell("nig", peepholes=True, input_gate=False, description="No input gate: i = 1."),
    GatedCell("nfg", peepholes=True, forget_gate=False, description="No forget gate: f = 1 (unbounded cell)."),
    GatedCell("nog", peepholes=True, output_gate=False, description="No output gate: o = 1."),
    GatedCell("niaf", peepholes=True, input_activation="identity",
              description="No input activation function: g(x) = x."),
    GatedCell("noaf", peepholes=True, output_activation="identity",
              description="No output activation function: h(x) = x."),
    GatedCell("fgr", peepholes=True, gate_recurrence=True,
              description="Full gate recurrence: every gate also sees the gates i, f, o of the previous step."),
    LayerNormLSTM(),
    SLSTM(),
)


@hookimpl
def register_variants(register):
    for variant in BUILTIN_VARIANTS:
        register(variant)


#: The nine configurations of Greff et al. (2017), in the paper's order, the baseline V (``peephole``) first.
ODYSSEY = ("peephole", "nig", "nfg", "nog", "niaf", "noaf", "vanilla", "coupled", "fgr")


@hookimpl
def register_groups(register):
    register("odyssey", ODYSSEY, description="the nine configurations of 'LSTM: A Search Space Odyssey', V first")
