"""The deterministic plan of a study: for each (variant, trial index), its hyperparameters and its seed.

Everything is derived from the base seed with ``numpy.random.SeedSequence`` keyed by stable integers (never Python's
salted ``hash``), so the plan is the same on every machine, in every worker and on every re-run:

- hyperparameters: keyed by (base seed, trial index) in the paired design, where every variant gets the same settings,
  and by (base seed, variant, trial index) with ``independent=True`` (the paper's design);
- training seed (weight initialisation, shuffling, input noise): keyed by (base seed, variant, trial index).

Growing a study (more trials, more variants) keeps the existing entries unchanged.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from lstmcore.ablation.config import StudyConfig

_HYPERPARAMETER_STREAM = 1
_TRAINING_STREAM = 2


@dataclass(frozen=True)
class PlannedTrial:
    variant: str
    index: int
    parameters: dict        # the stored (Optuna) parameters: log10 values for log-scaled hyperparameters
    hyperparameters: dict   # the values given to the model and to fit
    seed: int

    @property
    def key(self) -> str:
        return plan_key(self.variant, self.index)


def plan_key(variant: str, index: int) -> str:
    return f"{variant}/{index}"


def _name_key(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _generator(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in key]))


def planned_trial(config: StudyConfig, variant: str, index: int) -> PlannedTrial:
    if config.independent:
        rng = _generator(config.seed, _HYPERPARAMETER_STREAM, _name_key(variant), index)
    else:
        rng = _generator(config.seed, _HYPERPARAMETER_STREAM, index)
    parameters = config.space.sample(rng)
    seed = int(np.random.SeedSequence([config.seed, _TRAINING_STREAM, _name_key(variant), index])
               .generate_state(1)[0])
    return PlannedTrial(variant, index, parameters, config.space.hyperparameters(parameters), seed)


def make_plan(config: StudyConfig) -> list[PlannedTrial]:
    """Every planned trial, trial index first, so a partial study is balanced across variants."""
    return [planned_trial(config, variant, index) for index in range(config.trials) for variant in config.variants]
