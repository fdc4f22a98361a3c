"""One trial, as a worker runs it: a pure function of its task (no storage access), so that local processes and Dask
workers compute the same thing and a lost worker can never write a duplicate result.
"""
from __future__ import annotations

import functools
import importlib
import json
import math
import os
import socket
import time
import traceback

FIT_HYPERPARAMETERS = ("learning_rate", "momentum", "input_noise", "clip_norm", "batch_size")
#: hyperparameters that are options of the model (lstmcore.LSTM's, through SequenceModel)
MODEL_HYPERPARAMETERS = ("forget_bias", "chrono_init", "zoneout", "recurrent_dropout")


def make_task(config, planned, blas_threads: int) -> dict:
    """The picklable description of one planned trial."""
    return {"key": planned.key, "variant": planned.variant, "index": planned.index,
            "hyperparameters": dict(planned.hyperparameters), "seed": planned.seed,
            "dataset": config.dataset, "dataset_options": dict(config.dataset_options),
            "training": dict(config.training), "model": dict(config.model), "blas_threads": int(blas_threads)}


def dataset_loader(name: str):
    """The function that builds a study's dataset: a registered one (built-in or a plugin's, ``register_datasets``)
    or, as a shortcut that needs no plugin, ``package.module:function``; ``ConfigError`` naming ``--dataset``
    otherwise."""
    from lstmcore.ablation.config import ConfigError
    from lstmcore.plugins import registry

    if ":" not in name:
        try:
            return registry.dataset(name)
        except KeyError:
            raise ConfigError(f"--dataset {name!r} is neither a built-in dataset nor a plugin's "
                              f"({', '.join(registry.names('dataset'))}) nor package.module:function returning a "
                              f"lstmcore Dataset") from None
    module_name, _, function_name = (part.strip() for part in name.partition(":"))
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module raised while importing
        raise ConfigError(f"--dataset {name!r}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    loader = getattr(module, function_name, None)
    if not callable(loader):
        raise ConfigError(f"--dataset {name!r}: module {module_name!r} has no function {function_name!r}")
    return loader


def check_trial_setup(config, load: bool = True) -> None:
    """Check what every trial of ``config`` builds, before any runs: the dataset (``check_dataset``) and, when it is
    loaded here, the model of each variant at the largest hidden size of the space (sizes, variant, [model]
    options). ``ConfigError`` naming the setting otherwise."""
    from lstmcore.ablation.config import ConfigError

    data = check_dataset(config.dataset, config.dataset_options, load=load)
    if data is None:
        return
    import numpy as np

    from lstmcore.training import SequenceModel

    hidden = config.space.dimensions.get("hidden_size")
    largest = 1 if hidden is None else hidden.to_value(hidden.value if not hidden.searched else hidden.bounds[1])
    model_options = dict(config.model)
    dtype = np.dtype(model_options.pop("dtype", "float32"))
    for name in MODEL_HYPERPARAMETERS:  # a model option the space searches: at its upper bound
        dim = config.space.dimensions.get(name)
        if dim is not None:
            model_options[name] = dim.to_value(dim.value if not dim.searched else dim.bounds[1])
    for variant in config.variants:
        try:
            SequenceModel(data.n_inputs, int(largest), data.n_outputs, variant=variant, output=data.output,
                          per_step=data.per_step, seed=0, dtype=dtype, **model_options)
        except (TypeError, ValueError, MemoryError, OverflowError) as exc:
            raise ConfigError(f"the {variant} model of this study at hidden_size = {largest} (the space's "
                              f"largest) cannot be built: {' '.join(str(exc).split())[:300]}") from None


def check_dataset(name: str, options: dict, load: bool = True):
    """Check a study's dataset before any trial runs: the loader exists, takes ``options`` and (``load``) builds a
    ``lstmcore.datasets.Dataset``, which is returned (``None`` without ``load``). ``ConfigError`` naming
    ``--dataset`` or ``--dataset-option`` otherwise."""
    import inspect

    from lstmcore.ablation.config import ConfigError
    from lstmcore.datasets import Dataset

    loader = dataset_loader(name)
    try:
        parameters = inspect.signature(loader).parameters
    except (TypeError, ValueError):  # no signature to check (a builtin or C function)
        parameters = None
    if parameters is not None and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(options) - set(parameters))
        if unknown:
            raise ConfigError(f"--dataset-option {', '.join(unknown)}: not an option of dataset {name!r} "
                              f"(its options: {', '.join(parameters) or 'none'})")
    if not load:
        return None
    try:
        data = load_study_dataset(name, options)
    except Exception as exc:
        raise ConfigError(f"dataset {name!r} with options {options or '{}'} cannot be loaded: "
                          f"{type(exc).__name__}: {' '.join(str(exc).split())}") from None
    finally:
        _load_dataset_cached.cache_clear()  # the coordinator does not train: do not keep the data
    if not isinstance(data, Dataset):
        raise ConfigError(f"--dataset {name!r} returned {type(data).__name__}, not a lstmcore.datasets.Dataset")
    return data


@functools.lru_cache(maxsize=4)
def _load_dataset_cached(name: str, options_json: str):
    return dataset_loader(name)(**json.loads(options_json))


def load_study_dataset(name: str, options: dict):
    """A built-in dataset by name, or ``package.module:function(**options)`` returning a ``lstmcore.datasets.Dataset``
    (cached per process: a worker loads it once)."""
    return _load_dataset_cached(name, json.dumps(options, sort_keys=True))


def _limit_blas_threads(threads: int):
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # the environment variables set for the worker still apply
        return None
    return threadpool_limits(limits=threads, user_api="blas")


def run_trial(task: dict) -> dict:
    """Train one model and evaluate it; never raises for a trial's own failure (the reason is in the result)."""
    start = time.perf_counter()
    result = {"key": task["key"], "variant": task["variant"], "index": task["index"], "seed": task["seed"],
              "host": socket.gethostname(), "pid": os.getpid()}
    limiter = _limit_blas_threads(task.get("blas_threads", 1))
    try:
        result.update(_train(task))
    except Exception as exc:  # a trial that raises is recorded with its reason; the study goes on
        result.update(state="FAIL", status="error", reason=f"{type(exc).__name__}: {exc}",
                      traceback="".join(traceback.format_exception(exc))[-4000:])
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    result["wall_time"] = time.perf_counter() - start
    return result


def _train(task: dict) -> dict:
    import numpy as np

    from lstmcore.training import SequenceModel, evaluate, fit

    data = load_study_dataset(task["dataset"], task["dataset_options"])
    hyper = task["hyperparameters"]
    model_options = dict(task["model"])
    dtype = np.dtype(model_options.pop("dtype", "float32"))
    model_options.update({name: hyper[name] for name in MODEL_HYPERPARAMETERS if name in hyper})
    seed_sequence = np.random.SeedSequence(task["seed"])
    model_seed, fit_seed = (int(s.generate_state(1)[0]) for s in seed_sequence.spawn(2))
    model = SequenceModel(data.n_inputs, int(hyper["hidden_size"]), data.n_outputs, variant=task["variant"],
                          output=data.output, per_step=data.per_step, seed=model_seed, dtype=dtype, **model_options)
    fit_options = dict(task["training"])
    fit_options.update({name: hyper[name] for name in FIT_HYPERPARAMETERS if name in hyper})
    if "batch_size" in fit_options:
        fit_options["batch_size"] = int(fit_options["batch_size"])
    outcome = fit(model, data.train, data.valid, seed=fit_seed, **fit_options)
    record = {"status": outcome.status, "reason": outcome.reason or "", "epochs": int(outcome.epochs),
              "best_epoch": None if outcome.best_epoch is None else int(outcome.best_epoch),
              "parameter_count": int(model.parameter_count()), "metric": data.metric,
              "train_time": float(outcome.wall_time)}
    best_valid = outcome.best_valid
    if best_valid is None or not math.isfinite(best_valid):
        record.update(state="FAIL", valid=None, test=None,
                      reason=record["reason"] or f"no finite validation {data.metric} (status {outcome.status})")
        return record
    test = float(evaluate(model, data.test))
    if not math.isfinite(test):
        record.update(state="FAIL", valid=float(best_valid), test=None,
                      reason=f"test {data.metric} is not finite at the best epoch")
        return record
    record.update(state="COMPLETE", valid=float(best_valid), test=test)
    return record
