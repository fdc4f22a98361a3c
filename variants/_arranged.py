"""``ArrangedCell``: a compiled cell whose parameters are not the driver's arrays as they stand.

``CompiledCell`` hands the driver views of the parameter dict (and of the gradient dict, where the driver writes).
Some cells need arrays arranged from their parameters instead: a zero input bias (a bias before a layer norm would
be normalised away, so it is a step parameter), several parameter vectors joined into the step's one vector, or a
block-diagonal recurrent weight stored compactly and expanded for the driver. Such a cell implements
``driver_arrays(params)`` (copies allowed) and ``gradients(params, driver_grads)`` (the driver's gradients of those
arrays mapped back to the parameters); forward and backward are done here.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from lstmcore._kernels import _driver
from lstmcore.variant import CompiledCell


class ArrangedCell(CompiledCell):
    """A ``CompiledCell`` whose driver arrays are arranged from the parameters (see the module docstring). A
    dataclass subclass names its options (fields) in ``_OPTIONS``."""

    _OPTIONS: ClassVar[tuple[str, ...]] = ()

    def with_options(self, **options):
        unknown = sorted(set(options) - set(self._OPTIONS))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown} for variant {self.name!r}; "
                            f"it accepts {', '.join(self._OPTIONS) or 'none'}")
        return dataclasses.replace(self, **options) if options else self

    def kernel_for(self, hidden_size: int):
        """The ``CellKernel`` for this hidden size (``step_kernel()`` unless the description depends on it)."""
        return self.step_kernel()

    def driver_arrays(self, params: dict) -> tuple:
        """``(W, b, recurrent_weights, step_params)`` for the driver (C-contiguous, the parameters' dtype)."""
        raise NotImplementedError

    def gradients(self, params: dict, driver_grads: tuple) -> dict:
        """The gradients keyed like ``params``, from ``(dW, db, d_recurrent_weights, d_step_params)``."""
        raise NotImplementedError

    def driver_parameters(self, params):
        return self.driver_arrays(params)

    def forward(self, params, x, state, lengths, reverse, out):
        W, b, weights, step_params = self.driver_arrays(params)
        return _driver.forward(self.kernel_for(out.shape[2]), bool(reverse), x, W, b, tuple(weights), step_params,
                               lengths, tuple(state), out)

    def backward(self, params, cache, d_out, d_state, d_x, accumulate_dx):
        W, b, weights, step_params = self.driver_arrays(params)
        dW, db = np.empty_like(W), np.empty_like(b)
        d_weights = tuple(np.empty_like(w) for w in weights)
        d_step = None if step_params is None else np.empty_like(step_params)
        d_init = _driver.backward(cache, d_out, tuple(d_state), dW, db, d_weights, d_step, d_x, bool(accumulate_dx))
        return d_init, self.gradients(params, (dW, db, d_weights, d_step))
