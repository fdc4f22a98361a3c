"""Where the tests find ``../shared/data`` (beside the checkout), or ``LSTMCORE_SHARED_DATA``; ``None`` when absent."""
from __future__ import annotations

import os
from pathlib import Path


def shared_data_dir(folder: str, pattern: str) -> Path | None:
    """The shared data subfolder ``folder`` (e.g. ``"onnx-lstm"``) if it holds a file matching ``pattern``.

    ``LSTMCORE_SHARED_DATA`` may name the subfolder itself, the shared data folder or the shared folder.
    """
    candidates = []
    env = os.environ.get("LSTMCORE_SHARED_DATA")
    if env:
        candidates += [Path(env), Path(env) / folder, Path(env) / "data" / folder]
    candidates.append(Path(__file__).resolve().parents[2] / "shared" / "data" / folder)
    for path in candidates:
        if path.is_dir() and any(path.glob(pattern)):
            return path
    return None
