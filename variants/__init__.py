"""The built-in variants and their groups, registered through the same ``register_variants`` and ``register_groups``
hooks as any third-party plugin: the nine of "LSTM: A Search Space Odyssey" (Greff et al., 2017), specs of the
gated-cell family, with their group ``odyssey``; and the other compiled cells of the LSTM family (``lstmcore.cells``:
GRU, MGU, JANET; ``lnlstm.py``, ``slstm.py``: the layer-normalised LSTM and sLSTM), with the group ``family``. Installed as ``lstmcore.variants``."""
from lstmcore.cells import GRU, JANET, MGU
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
    GRU(description="Gated recurrent unit (Cho et al., 2014), ONNX/PyTorch semantics (torch.nn.GRU's by default)."),
    MGU(description="Minimal gated unit (Zhou et al., 2016): one forget gate, h = (1 - f) h + f n."),
    JANET(description="JANET (van der Westhuizen & Lasenby, 2018): forget gate only, input gate 1 - sig(s - beta)."),
)


@hookimpl
def register_variants(register):
    for variant in BUILTIN_VARIANTS:
        register(variant)


#: The nine configurations of Greff et al. (2017), in the paper's order, the baseline V (``peephole``) first.
ODYSSEY = ("peephole", "nig", "nfg", "nog", "niaf", "noaf", "vanilla", "coupled", "fgr")

#: The LSTM family beyond the Odyssey's gate ablations: the frameworks' LSTM (``vanilla``, these cells' natural
#: baseline: ``--baseline vanilla``) and the paper's V first, then the other gated cells of the literature
#: (docs/cells.md). Cells added to lstmcore join it here.
FAMILY = ("vanilla", "peephole", "gru", "mgu", "janet", "lnlstm", "slstm")


@hookimpl
def register_groups(register):
    register("odyssey", ODYSSEY, description="the nine configurations of 'LSTM: A Search Space Odyssey', V first")
    register("family", FAMILY, description="the LSTM family: vanilla, peephole and the other gated cells of the "
                                           "literature (GRU, MGU, JANET, LN-LSTM, sLSTM)")
