"""``SequenceModel``: a stack of ``lstmcore.LSTM`` layers of any registered variant and a dense readout, with forward
and backward through the whole model."""
from __future__ import annotations

import numpy as np

from lstmcore._per_thread import PerThreadState, per_thread
from lstmcore._validation import positive_int, random_seed
from lstmcore.layers import LSTM
from lstmcore.training.losses import loss_for_output, step_mask

READOUT_WEIGHT, READOUT_BIAS = "W_out", "b_out"
#: How a batch's summed loss becomes the training objective (see ``SequenceModel.loss_and_gradients``).
NORMALIZATIONS = ("step", "sequence")
#: What ``backward`` reports (``NonFiniteError``) when the readout's gradient overflows.
NON_FINITE_GRADIENT = "the gradient reaching the LSTM layers contains NaN or Inf"



def _seed_sequence(seed) -> np.random.SeedSequence:
    """The ``SeedSequence`` of a checked seed (a ``Generator`` or bit generator gives one drawn from its stream)."""
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.BitGenerator):
        seed = np.random.Generator(seed)
    if isinstance(seed, np.random.Generator):
        return np.random.SeedSequence(seed.integers(2**32, size=4).tolist())
    return np.random.SeedSequence(seed)

class NonFiniteError(FloatingPointError):
    """The loss, or a gradient on its way into the layers, is NaN or Inf: training has diverged."""


class SequenceModel(PerThreadState):
    """LSTM layers and a dense readout ``a = W_out h + b_out`` with a linear, sigmoid or softmax output.

    - ``per_step=True`` (sequence to sequence, Keras' ``TimeDistributed(Dense)``): the readout is applied at every step
      of the top layer's output, ``a_t = W_out y_t + b_out``; logits are ``(B, T, K)``.
    - ``per_step=False`` (classification or regression of a whole sequence): the readout sees the top layer's state at
      each sequence's last real step (for a bidirectional stack, the forward direction's last step concatenated with
      the reverse direction's final state, as PyTorch's ``h_n[-2:]``); logits are ``(B, K)``.

    Inputs are batch-first ``(B, T, input_size)`` with optional ``lengths`` ``(B,)``. The output's activation fixes the
    loss (``self.loss``): linear → mean squared error, sigmoid → Bernoulli NLL, softmax → cross-entropy.
    ``params`` holds the layers' parameters under their ``lstmcore.LSTM`` names plus ``W_out`` ``(K, D*H)`` and
    ``b_out`` ``(K,)``; after ``backward``, ``grads`` has the same keys. As for ``lstmcore.LSTM``, the tape and
    ``grads`` are per thread, and changing a parameter in place between forward and backward does not change the
    gradients.
    """

    _tape = per_thread()
    grads = per_thread(dict, shared_fallback=True)

    def __init__(self, input_size, hidden_size, output_size, *, variant="vanilla", num_layers=1, bidirectional=False,
                 output="sigmoid", per_step=True, seed=None, dtype=np.float32, **variant_options):
        positive_int(output_size, "output_size")
        self.loss = loss_for_output(output)
        self.output = output
        self.per_step = bool(per_step)
        self.output_size = int(output_size)
        self.variant_options = dict(variant_options)
        lstm_seed, readout_seed = _seed_sequence(random_seed(seed, "seed")).spawn(2)
        self.lstm = LSTM(input_size, hidden_size, variant=variant, num_layers=num_layers, bidirectional=bidirectional,
                         batch_first=True, dtype=dtype, seed=np.random.default_rng(lstm_seed), **variant_options)
        features = self.lstm.num_directions * self.lstm.output_width  # hidden_size, or proj_size (variant_options)
        bound = 1.0 / np.sqrt(features)         # PyTorch's nn.Linear initialisation
        rng = np.random.default_rng(readout_seed)
        self.readout = {
            READOUT_WEIGHT: rng.uniform(-bound, bound, size=(self.output_size, features)).astype(self.dtype),
            READOUT_BIAS: np.zeros(self.output_size, dtype=self.dtype),
        }

    # -- description --------------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> np.dtype:
        return self.lstm.dtype

    @property
    def input_size(self) -> int:
        return self.lstm.input_size

    @property
    def hidden_size(self) -> int:
        return self.lstm.hidden_size

    @property
    def num_layers(self) -> int:
        return self.lstm.num_layers

    @property
    def bidirectional(self) -> bool:
        return self.lstm.bidirectional

    @property
    def variant(self) -> str:
        return self.lstm.variant_name

    @property
    def params(self) -> dict[str, np.ndarray]:
        """All parameters by name (the arrays themselves: update them in place)."""
        return {**self.lstm.params, **self.readout}

    def parameter_count(self) -> int:
        return int(sum(v.size for v in self.params.values()))

    def summary(self):
        """A Keras-style table (``print(model.summary())``) of the LSTM layers and the readout; ``.total`` equals
        ``parameter_count()``."""
        from lstmcore.summaries import model_summary

        return model_summary(self)

    def config(self) -> dict:
        """The constructor's arguments (without the seed), enough to build the same architecture again."""
        return {"input_size": self.input_size, "hidden_size": self.hidden_size, "output_size": self.output_size,
                "variant": self.variant, "num_layers": self.num_layers, "bidirectional": self.bidirectional,
                "output": self.output, "per_step": self.per_step, "dtype": self.dtype.name,
                "variant_options": dict(self.variant_options)}

    def __repr__(self) -> str:
        return (f"SequenceModel({self.input_size}, {self.hidden_size}, {self.output_size}, variant={self.variant!r}, "
                f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, output={self.output!r}, "
                f"per_step={self.per_step}, dtype={self.dtype.name})")

    # -- compute ------------------------------------------------------------------------------------------------------
    def _checked_readout(self) -> tuple[np.ndarray, np.ndarray]:
        W, b = self.readout[READOUT_WEIGHT], self.readout[READOUT_BIAS]
        expected = (self.output_size, self.lstm.num_directions * self.lstm.output_width)
        for value, shape, name in ((W, expected, READOUT_WEIGHT), (b, expected[:1], READOUT_BIAS)):
            if not isinstance(value, np.ndarray) or value.shape != shape or value.dtype != self.dtype:
                raise ValueError(f"params[{name!r}] must be a {self.dtype} array of shape {shape}")
        return W, b

    def forward(self, x, lengths=None, training=False) -> np.ndarray:
        """Logits: ``(B, T, K)`` per step or ``(B, K)`` at the last step; ``x`` is ``(B, T, input_size)``.
        ``training`` draws the layers' zoneout and recurrent dropout masks (``loss_and_gradients`` does)."""
        W, b = self._checked_readout()
        self._tape = None
        output, final = self.lstm(x, lengths=lengths, training=training)
        D = self.lstm.num_directions
        if self.per_step:
            features = output
        else:
            h_n = final[0]                          # (L*D, B, H): the top layer's directions are the last D rows
            features = np.concatenate(list(h_n[-D:]), axis=1)
        logits = features @ W.T + b
        self._tape = (features, output.shape, W.copy())  # the readout the forward used
        return logits

    __call__ = forward

    def predict(self, x, lengths=None) -> np.ndarray:
        """The readout's outputs: values (linear), probabilities per label (sigmoid) or per class (softmax)."""
        return self.loss.activate(self.forward(x, lengths))

    def backward(self, d_logits, need_input_grad: bool = False):
        """Backpropagate ``∂E/∂logits`` through the readout and the LSTM stack; fills ``grads``.

        Readout: ``∂E/∂W_out = Σ δa hᵀ``, ``∂E/∂b_out = Σ δa``, ``∂E/∂h = W_outᵀ δa``; then BPTT in the layers.
        Returns ``∂E/∂x`` when ``need_input_grad``.
        """
        if self._tape is None:
            raise RuntimeError("backward() needs a forward() first, in the same thread (each thread differentiates "
                               "its own last forward)")
        features, output_shape, W = self._tape
        d_logits = np.asarray(d_logits)
        if d_logits.shape != features.shape[:-1] + (self.output_size,) or d_logits.dtype != self.dtype:
            raise ValueError(f"d_logits must be a {self.dtype} array of shape "
                             f"{features.shape[:-1] + (self.output_size,)}, got {d_logits.dtype} {d_logits.shape}")
        flat_d = d_logits.reshape(-1, self.output_size)
        d_W = flat_d.T @ features.reshape(-1, features.shape[-1])
        d_b = flat_d.sum(axis=0)
        with np.errstate(over="ignore", invalid="ignore"):
            d_features = d_logits @ W
        if not np.isfinite(d_features).all():
            raise NonFiniteError(NON_FINITE_GRADIENT)
        if self.per_step:
            d_x = self.lstm.backward(d_features, need_input_grad=need_input_grad)
        else:
            L, D, H = self.num_layers, self.lstm.num_directions, self.lstm.output_width
            B = d_features.shape[0]
            d_h_n = np.zeros((L * D, B, H), dtype=self.dtype)
            d_h_n[-D:] = d_features.reshape(B, D, H).transpose(1, 0, 2)
            d_x = self.lstm.backward(np.zeros(output_shape, dtype=self.dtype), d_h_n=d_h_n,
                                     need_input_grad=need_input_grad)
        self.grads = {**self.lstm.grads, READOUT_WEIGHT: d_W, READOUT_BIAS: d_b}
        return d_x

    def targets_mask(self, lengths, T: int, B: int) -> np.ndarray | None:
        """The step mask the loss needs: ``(B, T)`` per step, None (every sequence counts once) at the last step."""
        if not self.per_step:
            return None
        return step_mask(np.full(B, T) if lengths is None else lengths, T, self.dtype)

    def loss_and_gradients(self, x, y, lengths=None, normalization: str = "step") -> tuple[float, int]:
        """Forward, loss, backward on one batch; returns ``(Σ ℓ, n_steps)`` over the batch's real steps and fills
        ``grads`` with the gradient of the training objective ``E``:

        - ``normalization="step"``: ``E = Σ ℓ / n_steps``, the mean loss per real step (learning rates do not depend
          on the sequences' lengths);
        - ``normalization="sequence"``: ``E = Σ ℓ / B``, summed over each sequence's steps and averaged over the
          batch, as Brainstorm (the framework of Greff et al. 2017) normalises its losses; the paper's learning rates
          assume this scale.

        A NaN or Inf loss or gradient raises ``NonFiniteError``.
        """
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        logits = self.forward(x, lengths, training=True)
        B, T = np.shape(x)[:2]
        total, count, d_logits = self.loss(logits, y, self.targets_mask(lengths, T, B))
        if not np.isfinite(total):
            raise NonFiniteError(f"the loss is {total}")
        d_logits = d_logits / max(count if normalization == "step" else B, 1)
        self.backward(d_logits.astype(self.dtype, copy=False))
        return total, count

    def loss_value(self, x, y, lengths=None) -> tuple[float, int]:
        """``(Σ ℓ, n_steps)`` on one batch, forward only."""
        logits = self.forward(x, lengths)
        B, T = np.shape(x)[:2]
        total, count, _ = self.loss(logits, y, self.targets_mask(lengths, T, B))
        return total, count
