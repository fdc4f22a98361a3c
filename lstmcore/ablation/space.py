"""The hyperparameter search space of a study.

Each hyperparameter has a distribution. Log-scaled ones are *sampled as their log10 value*, and that value is what is
stored as the Optuna parameter (``log10_learning_rate``, ``log10_hidden_size``, ``log10_one_minus_momentum``): fANOVA
then sees the scale the search was made on (Greff et al. 2017; Optuna's fANOVA would otherwise weigh a log-uniform
parameter on a linear scale).

Distributions:

``uniform``                x ~ U[low, high]                                        parameter: ``NAME``
``log_uniform``            log10 x ~ U[log10 low, log10 high]                      parameter: ``log10_NAME``
``one_minus_log_uniform``  log10 (1 - x) ~ U[log10 low, log10 high] (momentum)     parameter: ``log10_one_minus_NAME``
``fixed``                  x = value (not a searched parameter)

Integer hyperparameters (``hidden_size``, ``batch_size``) are rounded to the nearest integer after sampling.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

#: Hyperparameters a trial can search over: how each reaches the model or ``fit``, and whether it is an integer.
HYPERPARAMETERS = {
    "hidden_size": "int",
    "learning_rate": "float",
    "momentum": "float",
    "input_noise": "float",
    "clip_norm": "float",
    "batch_size": "int",
    "forget_bias": "float",   # lstmcore.LSTM's initialisation options (through SequenceModel)
    "chrono_init": "float",
    "zoneout": "float",
    "recurrent_dropout": "float",
}
DISTRIBUTIONS = ("uniform", "log_uniform", "one_minus_log_uniform", "fixed")


@dataclass(frozen=True)
class Dimension:
    """One hyperparameter's distribution (see the module docstring)."""

    name: str
    distribution: str
    low: float | None = None
    high: float | None = None
    value: float | None = None

    def __post_init__(self):
        if self.name not in HYPERPARAMETERS:
            raise ValueError(f"unknown hyperparameter {self.name!r}; the search space knows "
                             f"{', '.join(HYPERPARAMETERS)}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"hyperparameter {self.name!r}: unknown distribution {self.distribution!r}; "
                             f"use one of {', '.join(DISTRIBUTIONS)}")
        integer = HYPERPARAMETERS[self.name] == "int"
        if self.distribution == "fixed":
            if self.value is None or not _is_number(self.value):
                raise ValueError(f"hyperparameter {self.name!r}: a fixed distribution needs a numeric 'value'")
            if integer and self.value < 1:
                raise ValueError(f"hyperparameter {self.name!r} is a count: its value must be at least 1, "
                                 f"got {self.value}")
            return
        if not (_is_number(self.low) and _is_number(self.high)):
            raise ValueError(f"hyperparameter {self.name!r}: {self.distribution} needs numeric 'low' and 'high'")
        if not self.low < self.high:
            raise ValueError(f"hyperparameter {self.name!r}: low ({self.low}) must be below high ({self.high})")
        if integer and self.low < 1:
            raise ValueError(f"hyperparameter {self.name!r} is a count: low must be at least 1, got {self.low}")
        if self.distribution != "uniform" and self.low <= 0:
            raise ValueError(f"hyperparameter {self.name!r}: {self.distribution} needs low > 0, got {self.low}")
        if self.distribution == "one_minus_log_uniform" and self.high > 1:
            raise ValueError(f"hyperparameter {self.name!r}: one_minus_log_uniform needs high <= 1 "
                             f"(it samples 1 - x in [low, high]), got {self.high}")

    @property
    def searched(self) -> bool:
        return self.distribution != "fixed"

    @property
    def parameter(self) -> str:
        """The name of the stored (Optuna) parameter."""
        return {"log_uniform": f"log10_{self.name}", "one_minus_log_uniform": f"log10_one_minus_{self.name}"}.get(
            self.distribution, self.name)

    @property
    def bounds(self) -> tuple[float, float]:
        """The range of the stored parameter (log10 of the bounds for the log distributions)."""
        if self.distribution == "uniform":
            return float(self.low), float(self.high)
        return math.log10(self.low), math.log10(self.high)

    def sample(self, rng: np.random.Generator) -> float | None:
        """The stored parameter's value for one trial (``None`` for a fixed hyperparameter)."""
        if not self.searched:
            return None
        low, high = self.bounds
        return float(rng.uniform(low, high))

    def to_value(self, parameter: float | None):
        """The hyperparameter's value from its stored parameter."""
        if self.distribution == "fixed":
            value = self.value
        elif self.distribution == "uniform":
            value = parameter
        elif self.distribution == "log_uniform":
            value = 10.0 ** parameter
        else:
            value = 1.0 - 10.0 ** parameter
        if HYPERPARAMETERS[self.name] == "int":
            return max(1, int(round(value)))
        return float(value)

    def to_dict(self) -> dict:
        if self.distribution == "fixed":
            return {"distribution": "fixed", "value": self.value}
        return {"distribution": self.distribution, "low": self.low, "high": self.high}

    def describe(self) -> str:
        if self.distribution == "fixed":
            return f"{self.name} = {self.value}"
        if self.distribution == "one_minus_log_uniform":
            return f"{self.name} = 1 - log-uniform[{self.low:g}, {self.high:g}]"
        return f"{self.name} ~ {self.distribution.replace('_', '-')}[{self.low:g}, {self.high:g}]"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class SearchSpace:
    """The dimensions of a study, by hyperparameter name."""

    dimensions: dict[str, Dimension] = field(default_factory=dict)

    @classmethod
    def paper(cls) -> "SearchSpace":
        """Greff et al. (2017): hidden size and learning rate log-uniform, momentum 1 - log-uniform, noise uniform."""
        return cls({
            "hidden_size": Dimension("hidden_size", "log_uniform", 20, 200),
            "learning_rate": Dimension("learning_rate", "log_uniform", 1e-6, 1e-2),
            "momentum": Dimension("momentum", "one_minus_log_uniform", 0.01, 1.0),
            "input_noise": Dimension("input_noise", "uniform", 0.0, 1.0),
        })

    @classmethod
    def from_dict(cls, table: dict, base: "SearchSpace | None" = None) -> "SearchSpace":
        """A space from a ``{name: {distribution, low, high | value}}`` table (a TOML ``[space]``), over ``base``."""
        dimensions = dict(base.dimensions) if base is not None else {}
        for name, spec in table.items():
            if _is_number(spec):
                spec = {"distribution": "fixed", "value": spec}
            if not isinstance(spec, dict):
                raise ValueError(f"[space.{name}] must be a table such as "
                                 f"{{distribution = \"log_uniform\", low = 1e-4, high = 1e-2}} or a number")
            unknown = set(spec) - {"distribution", "low", "high", "value"}
            if unknown:
                raise ValueError(f"[space.{name}]: unknown keys {sorted(unknown)}; use distribution, low, high, value")
            if "distribution" not in spec:
                raise ValueError(f"[space.{name}]: missing 'distribution' (one of {', '.join(DISTRIBUTIONS)})")
            dimensions[name] = Dimension(name, spec["distribution"], spec.get("low"), spec.get("high"),
                                         spec.get("value"))
        return cls(dimensions)

    def with_option(self, option: str) -> "SearchSpace":
        """Apply a command-line override (see ``parse_param_option``)."""
        name, table = parse_param_option(option)
        return SearchSpace.from_dict({name: table}, base=self)

    def to_dict(self) -> dict:
        return {name: dim.to_dict() for name, dim in self.dimensions.items()}

    @property
    def searched(self) -> list[Dimension]:
        return [dim for dim in self.dimensions.values() if dim.searched]

    def sample(self, rng: np.random.Generator) -> dict[str, float]:
        """Stored parameters of one trial, in a fixed order (so the same generator state gives the same trial)."""
        return {dim.parameter: dim.sample(rng) for dim in self.searched}

    def hyperparameters(self, parameters: dict[str, float]) -> dict:
        """The hyperparameter values (``learning_rate=...``) of a trial from its stored parameters."""
        return {name: dim.to_value(parameters.get(dim.parameter)) for name, dim in self.dimensions.items()}

    def describe(self) -> list[str]:
        return [dim.describe() for dim in self.dimensions.values()]


def parse_param_option(option: str) -> tuple[str, dict]:
    """``NAME=VALUE`` (fixed) or ``NAME=DISTRIBUTION:LOW:HIGH`` -> ``(name, table)`` as in a TOML ``[space]``."""
    name, sep, spec = option.partition("=")
    message = (f"--param {option!r}: expected NAME=VALUE or NAME=DISTRIBUTION:LOW:HIGH, e.g. "
               f"learning_rate=log_uniform:1e-4:1e-2")
    if not sep or not name.strip():
        raise ValueError(message)
    name = name.strip().replace("-", "_")
    parts = spec.split(":")
    try:
        if len(parts) == 1:
            return name, {"distribution": "fixed", "value": float(parts[0])}
        if len(parts) == 3:
            return name, {"distribution": parts[0], "low": float(parts[1]), "high": float(parts[2])}
    except ValueError:
        pass
    raise ValueError(message)
