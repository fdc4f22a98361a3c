"""Checkpoints: a model's weights and architecture (variant name and options, shapes, lstmcore version) in one
portable ``.npz`` that loads without pickle."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from lstmcore._version import __version__
from lstmcore.plugins import get_variant, list_variants
from lstmcore.training.model import SequenceModel
from lstmcore.variant import Activation

FORMAT = "lstmcore-checkpoint"
FORMAT_VERSION = 1
_META_KEY = "__meta__"
_PARAM_PREFIX = "param/"


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded here: not a checkpoint, a newer format, an unknown variant, or weights whose
    names or shapes do not match the architecture."""


def _jsonable(value):
    if isinstance(value, Activation):
        return [value.name, value.alpha, value.beta]
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store the variant option value {value!r} ({type(value).__name__}) in a checkpoint")


def save_checkpoint(model: SequenceModel, path, **metadata) -> Path:
    """Write ``model`` to ``path`` (``.npz`` is appended if missing); ``metadata`` (JSON-serialisable, e.g. the
    training hyperparameters or results) is stored alongside. Returns the path written."""
    if not isinstance(model, SequenceModel):
        raise TypeError(f"model must be a SequenceModel, got {type(model).__name__}")
    params = model.params
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "lstmcore_version": __version__,
        "config": _jsonable(model.config()),
        "shapes": {name: list(value.shape) for name, value in params.items()},
        "metadata": _jsonable(metadata),
    }
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    arrays = {_PARAM_PREFIX + name: value for name, value in params.items()}
    np.savez(path, **{_META_KEY: np.array(json.dumps(meta))}, **arrays)
    return path


_CONFIG_TYPES = {"input_size": int, "hidden_size": int, "output_size": int, "variant": str, "num_layers": int,
                 "bidirectional": bool, "output": str, "per_step": bool, "dtype": str, "variant_options": dict}
_DTYPES = ("float32", "float64")


def read_checkpoint(path) -> tuple[dict, dict[str, np.ndarray]]:
    """The checkpoint's metadata dict and its weights by parameter name, checked for format, version and the types of
    the architecture's fields. Anything unreadable or damaged raises ``CheckpointError`` naming ``path``."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            if _META_KEY not in archive.files:
                raise CheckpointError(f"{path}: not an lstmcore checkpoint (no {_META_KEY!r} entry)")
            meta = json.loads(str(archive[_META_KEY]))
            weights = {key[len(_PARAM_PREFIX):]: archive[key] for key in archive.files
                       if key.startswith(_PARAM_PREFIX)}
    except CheckpointError:
        raise
    # A truncated or bit-flipped archive surfaces as any of these, from zipfile, zlib, NumPy's format parser or JSON.
    except (OSError, ValueError, EOFError, KeyError, TypeError, zipfile.BadZipFile, zipfile.LargeZipFile,
            UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint (empty, truncated or damaged file?): "
                              f"{type(exc).__name__}: {exc}") from exc
    _check_meta(meta, path)
    return meta, weights


def _check_meta(meta, path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{path}: not an lstmcore checkpoint (format {found!r})")
    version = meta.get("format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{path}: malformed {_META_KEY}: format_version is {version!r}, not an integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {version} was written by lstmcore "
                              f"{meta.get('lstmcore_version')}, newer than this one ({__version__}, format "
                              f"{FORMAT_VERSION}); upgrade lstmcore")
    config = meta.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: malformed {_META_KEY}: 'config' is {config!r}, not an object")
    for key, kind in _CONFIG_TYPES.items():
        value = config.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CheckpointError(f"{path}: malformed {_META_KEY}: config[{key!r}] is {value!r}, expected "
                                  f"{kind.__name__}")
    if config["dtype"] not in _DTYPES:
        raise CheckpointError(f"{path}: malformed {_META_KEY}: config['dtype'] is {config['dtype']!r}, expected one "
                              f"of {', '.join(_DTYPES)}")
    if not isinstance(meta.get("metadata", {}), dict):
        raise CheckpointError(f"{path}: malformed {_META_KEY}: 'metadata' is not an object")


def _load_weights(model: SequenceModel, weights: dict[str, np.ndarray], source) -> None:
    params = model.params
    missing, unexpected = sorted(set(params) - set(weights)), sorted(set(weights) - set(params))
    if missing or unexpected:
        raise CheckpointError(f"{source}: the checkpoint's weights do not match the model: missing {missing}, "
                              f"unexpected {unexpected}")
    for name, value in params.items():
        if weights[name].shape != value.shape:
            raise CheckpointError(f"{source}: weight {name!r} has shape {weights[name].shape} in the checkpoint but "
                                  f"{value.shape} in the model")
        if not np.isfinite(weights[name]).all():
            raise CheckpointError(f"{source}: weight {name!r} contains NaN or Inf")
    for name, value in params.items():
        value[...] = weights[name]


def load_checkpoint(path, model: SequenceModel | None = None) -> SequenceModel:
    """Build the saved model and load its weights, or, given ``model``, load the weights into it after checking that
    the architectures match. An unregistered variant or mismatched shapes raise ``CheckpointError``."""
    meta, weights = read_checkpoint(path)
    config = dict(meta["config"])
    variant = config["variant"]
    try:
        get_variant(variant)
    except KeyError:
        raise CheckpointError(f"{path}: the checkpoint uses variant {variant!r}, which is not registered here "
                              f"(known: {', '.join(list_variants())}); install the plugin that provides it") from None
    if model is None:
        options = config.pop("variant_options")
        try:
            model = SequenceModel(config.pop("input_size"), config.pop("hidden_size"), config.pop("output_size"),
                                  dtype=np.dtype(config.pop("dtype")), **config, **options)
        except (TypeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{path}: the checkpoint's architecture cannot be built: {exc}") from exc
    else:
        ours = _jsonable(model.config())
        differences = [f"{key}: checkpoint {config.get(key)!r}, model {ours[key]!r}" for key in ours
                       if key != "dtype" and config.get(key) != ours[key]]
        if differences:
            raise CheckpointError(f"{path}: the checkpoint's architecture differs from the model's: "
                                  + "; ".join(differences))
    _load_weights(model, weights, path)
    return model


def checkpoint_metadata(path) -> dict:
    """The ``metadata`` given to ``save_checkpoint`` (and, under ``"checkpoint"``, the format, version, config)."""
    meta, _ = read_checkpoint(path)
    return {**meta.get("metadata", {}), "checkpoint": {k: v for k, v in meta.items() if k != "metadata"}}
