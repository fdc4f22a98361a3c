"""A study's configuration: defaults, then the ``--quick`` preset, then a TOML file, then command-line options.

A TOML file has up to five tables (every key optional)::

    [study]
    variants = "odyssey"            # a group name, or a list of variant names
    dataset = "jsb_chorales"        # a built-in dataset, or "package.module:function" returning a lstmcore Dataset
    trials = 20                     # trials per variant
    seed = 0                        # base seed of the whole plan
    independent = false             # true: each variant samples its own hyperparameters (the paper); false: paired
    baseline = "peephole"           # the variant the others are tested against (default: peephole if present)
    name = "jsb-2026"               # the study's name in its storage (default: a unique one, chosen on the first run)

    [dataset]                       # keyword arguments of load_dataset
    path = "jsb-chorales-quarter.json"

    [training]                      # fixed arguments of lstmcore.training.fit
    max_epochs = 30
    patience = 5
    batch_size = 1

    [model]                         # fixed arguments of SequenceModel
    num_layers = 1
    forget_bias = 1.0               # lstmcore.LSTM's initialisation options (or search them in [space])

    [space.learning_rate]           # the search space (see lstmcore.ablation.space)
    distribution = "log_uniform"
    low = 1e-5
    high = 1e-2
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from lstmcore.ablation.space import SearchSpace

TRAINING_KEYS = {"optimizer", "nesterov", "batch_size", "max_epochs", "patience", "time_budget", "clip_norm",
                 "learning_rate", "momentum", "input_noise", "loss_normalization", "eval_batch_size"}
MODEL_KEYS = {"num_layers", "bidirectional", "dtype", "forget_bias", "chrono_init", "zoneout", "recurrent_dropout"}
STUDY_KEYS = {"variants", "dataset", "trials", "seed", "independent", "baseline", "name"}
TABLES = {"study", "dataset", "training", "model", "space"}

DEFAULT_TRAINING = {"optimizer": "sgd", "nesterov": True, "batch_size": 1, "max_epochs": 30, "patience": 5,
                    "time_budget": None, "clip_norm": None}
DEFAULT_MODEL = {"num_layers": 1, "bidirectional": False, "dtype": "float32"}

#: ``--quick``: a study that runs offline in a few minutes on 2 cores and shows real differences between variants.
QUICK_PRESET = {
    "study": {"variants": ["peephole", "vanilla", "coupled", "nfg", "noaf"], "dataset": "adding", "trials": 10},
    "dataset": {"length": 30, "n_train": 2000, "n_valid": 300, "n_test": 500},
    "training": {"batch_size": 16, "max_epochs": 20, "patience": 5},
    "space": {
        "hidden_size": {"distribution": "log_uniform", "low": 8, "high": 32},
        "learning_rate": {"distribution": "log_uniform", "low": 1e-2, "high": 0.5},
        "momentum": {"distribution": "one_minus_log_uniform", "low": 0.01, "high": 0.3},
        "input_noise": {"distribution": "uniform", "low": 0.0, "high": 0.2},
    },
}


#: trials per variant at most (the plan is enumerated on every run)
MAX_TRIALS = 100_000
#: the ``lstmcore ablate`` option of a [training] key, for error messages
CLI_FLAGS = {"max_epochs": "--epochs", "patience": "--patience", "batch_size": "--batch-size",
             "time_budget": "--time-budget"}


class ConfigError(ValueError):
    """A study configuration that cannot be used; the message says which key and why."""


@dataclass
class StudyConfig:
    """Everything that defines a study's trials. ``fingerprint`` covers what fixes the plan of trials."""

    variants: list[str]
    dataset: str = "adding"
    dataset_options: dict = field(default_factory=dict)
    space: SearchSpace = field(default_factory=SearchSpace.paper)
    trials: int = 10
    training: dict = field(default_factory=lambda: dict(DEFAULT_TRAINING))
    model: dict = field(default_factory=lambda: dict(DEFAULT_MODEL))
    seed: int = 0
    independent: bool = False
    baseline: str | None = None
    name: str | None = None  # the study's name in its storage; None: a new study gets a unique one when it first runs

    def __post_init__(self):
        if not self.variants:
            raise ConfigError("a study needs at least one variant")
        if len(set(self.variants)) != len(self.variants):
            raise ConfigError(f"variants listed twice: {self.variants}")
        if isinstance(self.trials, bool) or not isinstance(self.trials, int) or not 1 <= self.trials <= MAX_TRIALS:
            raise ConfigError(f"trials (--trials, or trials in [study]) must be an integer from 1 to {MAX_TRIALS}, "
                              f"got {self.trials!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"seed (--seed, or seed in [study]) must be a non-negative integer, got {self.seed!r}")
        self._check_training_and_model()
        if not isinstance(self.independent, bool):
            raise ConfigError(f"independent in [study] must be true or false, got {self.independent!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise ConfigError(f"name in [study] must be a non-empty string, got {self.name!r}")
        if self.baseline is None:
            self.baseline = "peephole" if "peephole" in self.variants else self.variants[0]
        if self.baseline not in self.variants:
            raise ConfigError(f"baseline {self.baseline!r} is not among the study's variants {self.variants}")
        clash = set(self.training) & set(self.space.dimensions)
        if clash:
            raise ConfigError(f"{sorted(clash)} set both in [training] and in [space]; keep one")

    def _check_training_and_model(self) -> None:
        """The [training] table as ``fit`` checks it and the [model] table as ``SequenceModel`` needs it, now: a bad
        value must stop the command before any trial runs, not fail every trial."""
        from lstmcore.ablation.trial import MODEL_HYPERPARAMETERS
        from lstmcore.layers import check_layer_options
        from lstmcore.training import check_fit_options

        try:
            check_fit_options(**self.training)
        except (TypeError, ValueError) as exc:
            name = str(exc).split(" ")[0]
            flag = CLI_FLAGS.get(name)
            where = f"{flag}, or {name} in [training]" if flag else f"{name} in [training]"
            raise ConfigError(f"{exc} ({where})") from None
        for dim in self.space.dimensions.values():  # every value the search can give must be one fit takes
            if dim.name == "hidden_size":
                continue  # checked with the dataset's sizes (lstmcore.ablation.trial.check_trial_setup)
            extremes = [dim.value] if not dim.searched else [dim.to_value(bound) for bound in dim.bounds]
            check = check_layer_options if dim.name in MODEL_HYPERPARAMETERS else check_fit_options
            for value in extremes:
                try:
                    check(**{dim.name: value})
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"[space] {dim.describe()} reaches {dim.name} = {value!r}: {exc} "
                                      f"(--param {dim.name}=..., or [space.{dim.name}])") from None
        model = self.model
        clash = set(model) & set(self.space.dimensions)
        if clash:
            raise ConfigError(f"{sorted(clash)} set both in [model] and in [space]; keep one")
        try:
            check_layer_options(**{name: model.get(name) for name in MODEL_HYPERPARAMETERS})
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{exc} (in [model])") from None
        layers = model.get("num_layers", 1)
        if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
            raise ConfigError(f"num_layers in [model] must be a positive integer, got {layers!r}")
        if not isinstance(model.get("bidirectional", False), bool):
            raise ConfigError(f"bidirectional in [model] must be true or false, got {model['bidirectional']!r}")
        if model.get("dtype", "float32") not in ("float32", "float64"):
            raise ConfigError(f"dtype in [model] must be \"float32\" or \"float64\", got {model['dtype']!r}")

    # -- identity -----------------------------------------------------------------------------------------------------
    def plan_definition(self) -> dict:
        """What fixes each planned trial's hyperparameters and seed (variants and trial counts may grow on resume)."""
        return {"dataset": self.dataset, "dataset_options": self.dataset_options, "space": self.space.to_dict(),
                "training": self.training, "model": self.model, "seed": self.seed, "independent": self.independent}

    @property
    def fingerprint(self) -> str:
        text = json.dumps(self.plan_definition(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"variants": self.variants, "dataset": self.dataset, "dataset_options": self.dataset_options,
                "space": self.space.to_dict(), "trials": self.trials, "training": self.training, "model": self.model,
                "seed": self.seed, "independent": self.independent, "baseline": self.baseline, "name": self.name}

    @classmethod
    def from_dict(cls, data: dict) -> "StudyConfig":
        data = dict(data)
        data["space"] = SearchSpace.from_dict(data.get("space", {}))
        return cls(**data)

    # -- building -----------------------------------------------------------------------------------------------------
    @classmethod
    def from_tables(cls, *layers: dict) -> "StudyConfig":
        """Merge TOML-shaped tables, later ones winning key by key (``space`` dimension by dimension); a layer that
        changes the dataset drops the dataset options of the layers before it."""
        merged = {"study": {}, "dataset": {}, "training": dict(DEFAULT_TRAINING), "model": dict(DEFAULT_MODEL),
                  "space": {}}
        for layer in layers:
            unknown = set(layer) - TABLES
            if unknown:
                raise ConfigError(f"unknown tables {sorted(unknown)} in the study configuration; "
                                  f"use {', '.join(sorted(TABLES))}")
            for table, values in layer.items():
                if not isinstance(values, dict):
                    raise ConfigError(f"[{table}] must be a table")
            new_dataset = layer.get("study", {}).get("dataset")
            if new_dataset is not None and new_dataset != merged["study"].get("dataset", new_dataset):
                merged["dataset"] = {}  # the options of an earlier layer's dataset do not apply to another one
            for table, values in layer.items():
                merged[table].update(values)
        _check_keys("study", merged["study"], STUDY_KEYS)
        _check_keys("training", merged["training"], TRAINING_KEYS)
        _check_keys("model", merged["model"], MODEL_KEYS)
        study = merged["study"]
        try:
            space = SearchSpace.from_dict(merged["space"], base=SearchSpace.paper())
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        training = {k: v for k, v in merged["training"].items()}
        # a hyperparameter fixed in [training] leaves the space
        for name in list(space.dimensions):
            if name in training:
                space = SearchSpace({k: v for k, v in space.dimensions.items() if k != name})
        if training.get("optimizer", "sgd") != "sgd":
            # momentum and nesterov are SGD's: drop the defaults, refuse them when asked for explicitly
            asked = {name for layer in layers for name in layer.get("training", {})} | \
                    {name for layer in layers for name in layer.get("space", {})}
            clash = sorted(asked & {"momentum", "nesterov"})
            if clash:
                raise ConfigError(f"{', '.join(clash)} apply to optimizer = \"sgd\" only, not "
                                  f"{training['optimizer']!r}; remove them from the configuration")
            training.pop("nesterov", None)
            space = SearchSpace({k: v for k, v in space.dimensions.items() if k != "momentum"})
        return cls(
            variants=resolve_variants(study.get("variants", "odyssey")),
            dataset=str(study.get("dataset", "adding")),
            dataset_options=dict(merged["dataset"]),
            space=space,
            trials=study.get("trials", 10),
            training=training,
            model=merged["model"],
            seed=study.get("seed", 0),
            independent=study.get("independent", False),
            baseline=study.get("baseline"),
            name=study.get("name"),
        )


def _check_keys(table: str, values: dict, known: set) -> None:
    unknown = set(values) - known
    if unknown:
        raise ConfigError(f"unknown keys {sorted(unknown)} in [{table}]; known: {', '.join(sorted(known))}")


def resolve_variants(spec) -> list[str]:
    """Variant names from a comma-separated string or a list, with group names (``odyssey``) expanded.

    Every name must be registered (plugins included): ``KeyError`` listing the registered names otherwise.
    """
    import lstmcore

    if not isinstance(spec, (str, list, tuple)) or not all(isinstance(i, str) for i in ([] if isinstance(spec, str)
                                                                                      else spec)):
        raise ConfigError(f"variants must be a comma-separated string or a list of names, got {spec!r}")
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names: list[str] = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        expanded = lstmcore.get_group(item) if item in lstmcore.GROUPS else [item]
        for name in expanded:
            lstmcore.get_variant(name)  # KeyError listing the registered variants
            if name not in names:
                names.append(name)
    return names


def load_toml(path) -> dict:
    """Read a study's TOML file (``ConfigError`` naming the file on a syntax error)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read the study configuration {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
