"""JSB Chorales (Boulanger-Lewandowski et al. 2012), the music benchmark of Greff et al. (2017).

A chorale is a list of time steps at quarter-note resolution; a step is the list of sounding MIDI pitches in 21..108,
i.e. an 88-key piano roll. The task: at every step predict the next step's piano roll (sigmoid outputs); the metric is
the negative log-likelihood per step, the sum of the 88 Bernoulli NLLs averaged over all predicted steps.

Where the file comes from, first found wins:

1. ``path`` (a file, or a folder holding one of ``FILE_NAMES``);
2. the environment variable ``LSTMCORE_DATA`` (a file or a folder; ``<folder>/jsb-chorales/`` is searched too);
3. the cache folder ``$XDG_CACHE_HOME/lstmcore`` (``~/.cache/lstmcore``);
4. with ``download=True``, the public JSON of czhuang/JSB-Chorales-dataset on GitHub, saved into the cache folder.
"""
from __future__ import annotations

import json
import numbers
import os
import pickle
import urllib.request
from pathlib import Path

import numpy as np

from lstmcore.datasets._split import Dataset, DatasetError, Split

LOWEST_PITCH, HIGHEST_PITCH = 21, 108
N_KEYS = HIGHEST_PITCH - LOWEST_PITCH + 1        # 88
JSON_NAME = "jsb-chorales-quarter.json"
#: File names searched in a folder: the JSON of czhuang/JSB-Chorales-dataset, then the original pickle's usual names.
FILE_NAMES = (JSON_NAME, "jsb-chorales-quarter.pkl", "JSB Chorales.pickle", "JSB_Chorales.pickle",
              "jsb_chorales.pickle")
DOWNLOAD_URL = ("https://raw.githubusercontent.com/czhuang/JSB-Chorales-dataset/"
                "9a7f733ddb4ed91f48da64ac7f0f621c34aadd4d/" + JSON_NAME)
DOWNLOAD_TIMEOUT = 20.0
SPLITS = ("train", "valid", "test")


def cache_dir() -> Path:
    """Where downloaded data is kept: ``$XDG_CACHE_HOME/lstmcore`` or ``~/.cache/lstmcore``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lstmcore"


def _in_folder(folder: Path) -> Path | None:
    for sub in (folder, folder / "jsb-chorales"):
        for name in FILE_NAMES:
            if (sub / name).is_file():
                return sub / name
    return None


def find_jsb_chorales(path=None) -> Path | None:
    """The first JSB Chorales file found from ``path``, ``LSTMCORE_DATA`` or the cache folder, or None.

    A ``path`` that does not exist, or a folder that holds none of ``FILE_NAMES``, is an error (the user asked for it).
    """
    if path is not None:
        path = Path(path).expanduser()
        if path.is_file():
            return path
        found = _in_folder(path) if path.is_dir() else None
        if found is None:
            raise FileNotFoundError(f"no JSB Chorales file at {str(path)!r}: expected a file, or a folder holding one "
                                    f"of {', '.join(FILE_NAMES)}")
        return found
    env = os.environ.get("LSTMCORE_DATA")
    if env:
        env_path = Path(env).expanduser()
        if env_path.is_file():
            return env_path
        if env_path.is_dir() and (found := _in_folder(env_path)) is not None:
            return found
    return _in_folder(cache_dir())


def download_jsb_chorales(target_dir=None, url: str = DOWNLOAD_URL, timeout: float = DOWNLOAD_TIMEOUT) -> Path:
    """Download the JSON into ``target_dir`` (default: the cache folder); returns the file's path."""
    target = Path(target_dir) if target_dir is not None else cache_dir()
    target.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as response:
        payload = response.read()
    _check_chorales(json.loads(payload.decode("utf-8")), url)      # never keep a half or wrong download
    destination = target / JSON_NAME
    partial = destination.with_suffix(".part")
    partial.write_bytes(payload)
    partial.replace(destination)
    return destination


class _PlainDataUnpickler(pickle.Unpickler):
    """Loads only plain containers and numbers (and NumPy arrays): a data file must not run code."""

    _ALLOWED = frozenset({("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "set"), ("builtins", "frozenset"),
                ("__builtin__", "set"), ("__builtin__", "frozenset")})

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")


class UnreadablePickleError(DatasetError, pickle.UnpicklingError):
    """A JSB pickle that is damaged or would run code: a ``DatasetError`` and, as before, an ``UnpicklingError``."""


def read_chorales(path) -> dict[str, list]:
    """Read the JSON (``{"train","valid","test"}`` → chorales → steps → pitches) or the original pickle. A file that
    cannot be decoded or does not have that structure raises ``DatasetError`` naming the file and the place."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".json":
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        else:
            with open(path, "rb") as handle:
                data = _PlainDataUnpickler(handle, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise UnreadablePickleError(f"{path}: cannot load the JSB Chorales pickle: {exc}") from exc
    except (ValueError, EOFError, AttributeError, ImportError, IndexError, TypeError) as exc:
        # json.JSONDecodeError and UnicodeDecodeError are ValueErrors; a damaged pickle raises any of the others.
        raise DatasetError(f"{path}: cannot decode the JSB Chorales file: {type(exc).__name__}: {exc}") from exc
    _check_chorales(data, str(path))
    return data


_SEQUENCES = (list, tuple, np.ndarray)


def _check_chorales(data, source: str) -> None:
    if not isinstance(data, dict) or any(split not in data for split in SPLITS):
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise DatasetError(f"{source}: expected a mapping with keys {SPLITS}, got {keys}")
    for split in SPLITS:
        chorales = data[split]
        if not isinstance(chorales, _SEQUENCES) or len(chorales) == 0:
            raise DatasetError(f"{source}: split {split!r} must be a non-empty list of chorales, got "
                               f"{type(chorales).__name__} of length {len(chorales) if isinstance(chorales, _SEQUENCES) else '-'}")
        for index, chorale in enumerate(chorales):
            place = f"{source}: {split} chorale {index}"
            if not isinstance(chorale, _SEQUENCES):
                raise DatasetError(f"{place} must be a list of steps, got {type(chorale).__name__}")
            if len(chorale) < 2:
                raise DatasetError(f"{place} has {len(chorale)} steps; next-step prediction needs at least 2")
            for step_index, step in enumerate(chorale):
                if not isinstance(step, _SEQUENCES) or any(
                        isinstance(p, bool) or not isinstance(p, numbers.Real) or not float(p).is_integer()
                        for p in step):
                    raise DatasetError(f"{place}, step {step_index} must be a list of pitch numbers, got {step!r}")
            pitches = [p for step in chorale for p in step]
            if pitches and (min(pitches) < LOWEST_PITCH or max(pitches) > HIGHEST_PITCH
                            or any(float(p) != int(p) for p in pitches)):
                raise DatasetError(f"{place} has pitches outside the integers {LOWEST_PITCH}..{HIGHEST_PITCH}")


def piano_roll(chorale, dtype=np.float32) -> np.ndarray:
    """A chorale (steps of MIDI pitches) as a ``(T, 88)`` binary piano roll; column k is pitch ``21 + k``."""
    roll = np.zeros((len(chorale), N_KEYS), dtype=dtype)
    for t, step in enumerate(chorale):
        keys = np.asarray([int(p) for p in step], dtype=np.int64) - LOWEST_PITCH
        roll[t, keys] = 1.0
    return roll


def next_step_split(chorales, dtype=np.float32) -> Split:
    """Inputs are the rolls at steps ``0..T-2``, targets the rolls at ``1..T-1``; length ``T - 1`` each."""
    rolls = [piano_roll(chorale, dtype) for chorale in chorales]
    lengths = np.array([len(r) - 1 for r in rolls], dtype=np.int64)
    T = int(lengths.max())
    x = np.zeros((len(rolls), T, N_KEYS), dtype=dtype)
    y = np.zeros_like(x)
    for row, roll in enumerate(rolls):
        x[row, : len(roll) - 1] = roll[:-1]
        y[row, : len(roll) - 1] = roll[1:]
    return Split(x, y, lengths)


def load_jsb_chorales(path=None, download: bool = True, dtype=np.float32) -> Dataset:
    """JSB Chorales as next-step prediction: ``x``, ``y`` are ``(N, T_max, 88)`` piano rolls (``y`` is ``x`` one
    step ahead), ``lengths`` the number of predicted steps; splits are the standard train/valid/test (229/76/77)."""
    found = find_jsb_chorales(path)
    if found is None and download:
        try:
            found = download_jsb_chorales()
        except (OSError, ValueError) as exc:   # URLError and timeouts are OSErrors
            raise FileNotFoundError(_missing_message(f"the download from {DOWNLOAD_URL} failed ({exc})")) from exc
    if found is None:
        raise FileNotFoundError(_missing_message("download=False"))
    data = read_chorales(found)
    splits = [next_step_split(data[name], dtype) for name in SPLITS]
    return Dataset("jsb_chorales", *splits, n_inputs=N_KEYS, n_outputs=N_KEYS, output="sigmoid", per_step=True,
                   metric="nll_per_step")


def _missing_message(why: str) -> str:
    return (f"JSB Chorales not found and {why}. Download {DOWNLOAD_URL} (or the original 'JSB Chorales.pickle') and "
            f"pass its path, set LSTMCORE_DATA to the file or its folder, or put it into {cache_dir()}.")
