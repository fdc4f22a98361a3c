"""First-order optimizers that update a dict of NumPy parameters in place, and gradient clipping by global norm.

    opt = Adam(learning_rate=1e-3)
    opt.step(model.params, model.grads)        # in place; the state is keyed by parameter name
"""
from __future__ import annotations

import math

import numpy as np


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """``‖g‖ = sqrt(Σ_params Σ g²)`` over all gradients (accumulated in float64)."""
    return math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) if g.dtype == np.float64 else
                         float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))


def clip_by_global_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale every gradient in place by ``min(1, max_norm / ‖g‖)`` (as ``torch.nn.utils.clip_grad_norm_``);
    returns the norm before clipping."""
    norm = global_norm(grads)
    if math.isfinite(norm) and norm > max_norm:
        scale = max_norm / norm
        for g in grads.values():
            g *= scale
    return norm


class Optimizer:
    """Updates parameters in place from their gradients: ``step(params, grads)``. ``learning_rate`` is a plain
    attribute, so a schedule sets it between steps."""

    def __init__(self, learning_rate: float):
        self.learning_rate = learning_rate
        self.state: dict[str, dict[str, np.ndarray]] = {}
        self.iterations = 0

    @property
    def learning_rate(self) -> float:
        return self._learning_rate

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"learning_rate must be a finite number >= 0, got {value!r}")
        self._learning_rate = value

    def _slot(self, name: str, like: np.ndarray, slot: str) -> np.ndarray:
        slots = self.state.setdefault(name, {})
        if slot not in slots:
            slots[slot] = np.zeros_like(like)
        return slots[slot]

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        missing = set(params) - set(grads)
        if missing:
            raise KeyError(f"no gradient for parameters {sorted(missing)}")
        for name, value in params.items():  # all checked before any is updated
            grad = grads[name]
            if not isinstance(grad, np.ndarray):
                raise ValueError(f"gradient of {name!r} must be a NumPy array, got {type(grad).__name__}")
            if grad.shape != value.shape or grad.dtype != value.dtype:
                raise ValueError(f"gradient of {name!r} has shape {grad.shape} and dtype {grad.dtype}, "
                                 f"the parameter {value.shape} and {value.dtype}")
        self.iterations += 1
        for name, value in params.items():
            self._update(name, value, grads[name])

    def _update(self, name: str, value: np.ndarray, grad: np.ndarray) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum μ and Nesterov momentum.

    Classical momentum: ``v ← μ v − ε g(θ)``, ``θ ← θ + v``. With μ = 0 both forms are plain SGD, ``θ ← θ − ε g``
    (a search space that samples μ near 0 does not have to special-case it).

    Nesterov momentum in Sutskever et al. (2013)'s form evaluates the gradient at the look-ahead point,
    ``v_{t+1} = μ v_t − ε g(θ_t + μ v_t)``, ``θ_{t+1} = θ_t + v_{t+1}``. The parameters held here are the look-ahead
    point ``Θ_t = θ_t + μ v_t`` (the change of variables of Bengio et al. 2013, also PyTorch's), so that the gradient
    the caller computes at the current parameters is ``g(Θ_t)``; the update is then
    ``v ← μ v − ε g(Θ)``, ``Θ ← Θ + μ v − ε g(Θ)`` — the same trajectory, shifted by ``μ v``.
    """

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False):
        super().__init__(learning_rate)
        momentum = float(momentum)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum!r}")
        self.momentum = momentum
        self.nesterov = bool(nesterov)

    def _update(self, name, value, grad):
        lr, mu = self.learning_rate, self.momentum
        if mu == 0.0:
            value -= lr * grad
            return
        velocity = self._slot(name, value, "velocity")
        velocity *= mu
        velocity -= lr * grad
        if self.nesterov:
            value += mu * velocity - lr * grad
        else:
            value += velocity

    def __repr__(self) -> str:
        return f"SGD(learning_rate={self.learning_rate:g}, momentum={self.momentum:g}, nesterov={self.nesterov})"


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with Keras' defaults: ``m ← β1 m + (1 − β1) g``, ``v ← β2 v + (1 − β2) g²``,
    ``θ ← θ − ε_t m / (sqrt(v) + ε̂)`` with the bias correction folded into ``ε_t = ε sqrt(1 − β2^t) / (1 − β1^t)``
    (the paper's "efficient version", as Keras and TensorFlow compute it)."""

    def __init__(self, learning_rate: float = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7):
        super().__init__(learning_rate)
        for value, name in ((beta_1, "beta_1"), (beta_2, "beta_2")):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {value!r}")
        if epsilon <= 0:
            raise ValueError(f"epsilon must be positive, got {epsilon!r}")
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def _update(self, name, value, grad):
        t = self.iterations
        step = self.learning_rate * math.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        m = self._slot(name, value, "m")
        v = self._slot(name, value, "v")
        m *= self.beta_1
        m += (1.0 - self.beta_1) * grad
        v *= self.beta_2
        v += (1.0 - self.beta_2) * np.square(grad)
        value -= step * m / (np.sqrt(v) + self.epsilon)

    def __repr__(self) -> str:
        return f"Adam(learning_rate={self.learning_rate:g}, beta_1={self.beta_1:g}, beta_2={self.beta_2:g})"


def make_optimizer(optimizer, learning_rate: float, momentum: float = 0.0, nesterov: bool = False) -> Optimizer:
    """An optimizer from a name (``"sgd"``, ``"adam"``) and hyperparameters, or the instance given."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if optimizer == "sgd":
        return SGD(learning_rate, momentum=momentum, nesterov=nesterov)
    if optimizer == "adam":
        if momentum or nesterov:
            raise ValueError("momentum and nesterov apply to SGD; Adam has beta_1 (pass an Adam instance)")
        return Adam(learning_rate)
    raise ValueError(f"optimizer must be 'sgd', 'adam' or an Optimizer instance, got {optimizer!r}")
