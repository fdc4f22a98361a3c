"""``lnlstm``: the layer-normalised LSTM (Ba, Kiros & Hinton, 2016) on the sequence driver."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from lstmcore._kernels import _lnlstm

from ._arranged import ArrangedCell

#: The parameter vectors of the step, in the order of its one vector (the gate blocks in the order i, f, o, z).
_STEP_VECTORS = ("gain_x", "gain_r", "b", "gain_c", "bias_c")


@functools.lru_cache(maxsize=64)
def _kernel(hidden_size: int, carry_normalised: bool):
    return _lnlstm.LayerNormKernel(hidden_size, carry_normalised)


@dataclass(frozen=True)
class LayerNormLSTM(ArrangedCell):
    """Layer-normalised LSTM (Ba, Kiros & Hinton, "Layer normalization", 2016), as haste's LayerNormLSTM computes it::

        a   = gain_x * LN(W x_t) + gain_r * LN(R h_{t-1}) + b        gate pre-activations, blocks [i, f, o, z]
        i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o)    z = tanh(a_z)
        s_t = f * c_{t-1} + i * z
        h_t = o * tanh(gain_c * LN(s_t) + bias_c)
        c_t = s_t                                   (carry_normalised_cell=True: c_t = gain_c * LN(s_t) + bias_c)

    LN(v) = (v - mean(v)) / sqrt(var(v) + 1e-5) over the 4H entries of W x_t, of R h_{t-1}, and over the H of s_t.
    The two gate norms have a gain each and share the bias b (a bias of their own would add to the same a: haste and
    PyTorch's cell each keep one of the three); the cell's norm has its gain and bias.

    By default the carried cell c_t is the unnormalised s_t (Ba et al., haste): the norm only shapes the output.
    ``carry_normalised_cell=True`` is PyTorch's benchmark ``LayerNormLSTMCell`` (benchmarks/fastrnns/custom_lstms.py),
    which carries the normalised cell instead, so each step's f * c_{t-1} sees a cell of zero mean and unit variance
    (times gain_c, plus bias_c) across its units: a long-range memory in one unit is rescaled by what all the others
    hold.

    Parameters: ``W`` (4H, I), ``R`` (4H, H), ``b``, ``gain_x``, ``gain_r`` (4H,), ``gain_c``, ``bias_c`` (H,):
    4H(I + H) + 14H per layer and direction. Initialised as PyTorch's LSTM for W, R, b; gains 1, bias_c 0.
    States h, c. Exact BPTT through the norms (docs/cells.md).
    """

    name: str = "lnlstm"
    carry_normalised_cell: bool = False
    description: str = ("Layer-normalised LSTM (Ba et al., 2016; haste): LN on W x, on R h and on the cell before "
                        "tanh, the carried cell unnormalised.")
    _OPTIONS: ClassVar[tuple[str, ...]] = ("carry_normalised_cell",)

    def __post_init__(self):
        if not isinstance(self.carry_normalised_cell, (bool, np.bool_)):
            raise TypeError(f"carry_normalised_cell must be True or False, got {self.carry_normalised_cell!r}")

    def parameter_shapes(self, input_size, hidden_size):
        H = hidden_size
        return {"W": (4 * H, input_size), "R": (4 * H, H), "b": (4 * H,), "gain_x": (4 * H,), "gain_r": (4 * H,),
                "gain_c": (H,), "bias_c": (H,)}

    def init_parameters(self, input_size, hidden_size, rng, dtype=np.float32):
        params = super().init_parameters(input_size, hidden_size, rng, dtype)
        for name in ("gain_x", "gain_r", "gain_c"):
            params[name][...] = 1
        params["bias_c"][...] = 0
        return params

    def kernel_for(self, hidden_size):
        return _kernel(int(hidden_size), bool(self.carry_normalised_cell))

    def driver_arrays(self, params):
        step = np.concatenate([params[name] for name in _STEP_VECTORS])
        zero_bias = np.zeros(params["W"].shape[0], params["W"].dtype)  # a bias before the norm would vanish in it
        return params["W"], zero_bias, (params["R"],), step

    def gradients(self, params, driver_grads):
        dW, _, (dR,), d_step = driver_grads
        grads = {"W": dW, "R": dR}
        start = 0
        for name in _STEP_VECTORS:
            size = params[name].shape[0]
            grads[name] = d_step[start:start + size].copy()
            start += size
        return grads
