"""Where a study lives: Optuna storage (an embedded journal file by default, or any Optuna RDB URL) plus
``study.json`` in the study's directory (the configuration and where the storage is).

Each planned trial is one Optuna trial. Its parameters are the sampled (log10) values, its value the validation metric
at the best epoch; its user attributes hold the plan key (``variant/index``), variant, trial index, seed, the
hyperparameter values, test metric, parameter count, epochs, best epoch, wall time, status and reason.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from lstmcore.ablation.config import ConfigError, StudyConfig

STUDY_FILE = "study.json"
JOURNAL_FILE = "study.journal"


def _optuna():
    from lstmcore.ablation import require

    require()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def open_storage(out_dir: str | os.PathLike, url: str | None = None):
    """An Optuna storage: ``url`` (``postgresql://...``, ``sqlite:///...``) or the journal file in ``out_dir``."""
    optuna = _optuna()
    if url:
        if "://" not in url:
            raise ConfigError(f"--storage {url!r} is not an Optuna RDB URL such as postgresql://user@host/db")
        return optuna.storages.RDBStorage(url)
    from optuna.storages.journal import JournalFileBackend

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(Path(out_dir) / JOURNAL_FILE)))


def save_study_file(out_dir, config: StudyConfig, storage_url: str | None) -> StudyConfig:
    """Write ``study.json`` and return the study's configuration: ``config``, grown to keep the variants and trials
    of an earlier run in the same directory. A directory that holds a study with another plan is refused."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / STUDY_FILE
    if path.exists():
        previous = read_study_file(out)
        old = StudyConfig.from_dict(previous["config"])
        if old.fingerprint != config.fingerprint:
            changed = [k for k, v in config.plan_definition().items() if old.plan_definition()[k] != v]
            raise ConfigError(
                f"{out} holds a study with different settings ({', '.join(changed)} changed); a study can only grow "
                f"(more variants or trials) when resumed. Use another --out, or the same settings.")
        if previous.get("storage") != storage_url:
            raise ConfigError(f"{out} was run with storage {previous.get('storage') or 'journal file'}; "
                              f"pass the same --storage to resume it")
        # growing: keep every variant already run, and the larger trial count
        variants = old.variants + [v for v in config.variants if v not in old.variants]
        config = StudyConfig.from_dict({**config.to_dict(), "variants": variants,
                                        "trials": max(old.trials, config.trials), "baseline": config.baseline})
    payload = {"config": config.to_dict(), "fingerprint": config.fingerprint, "storage": storage_url}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    tmp.replace(path)
    return config


def read_study_file(out_dir) -> dict:
    path = Path(out_dir) / STUDY_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {out_dir} is not a study directory (run `lstmcore ablate --out "
                                f"{out_dir}` first)")
    return json.loads(path.read_text())


def load_study(out_dir, url: str | None = None, name: str | None = None, create: bool = False):
    """The Optuna study of a study directory."""
    optuna = _optuna()
    info = None if create else read_study_file(out_dir)
    if info is not None:
        url = url or info.get("storage")
        name = name or info["config"]["name"]
    storage = open_storage(out_dir, url)
    if create:
        return optuna.create_study(study_name=name, storage=storage, direction="minimize", load_if_exists=True)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise FileNotFoundError(f"no study named {name!r} in the storage of {out_dir}") from None


TABLE_COLUMNS = ["number", "key", "variant", "index", "state", "status", "reason", "valid", "test", "metric",
                 "parameter_count", "epochs", "best_epoch", "wall_time", "train_time", "seed"]


def trial_rows(study) -> list[dict]:
    """One row per planned trial key: the completed trial if there is one, else the latest attempt."""
    by_key: dict[str, dict] = {}
    for trial in study.get_trials(deepcopy=False):
        attrs = trial.user_attrs
        if "key" not in attrs:
            continue
        row = {"number": trial.number, "state": trial.state.name}
        row.update({k: attrs.get(k) for k in TABLE_COLUMNS if k not in row})
        row["params"] = dict(trial.params)
        row["hyperparameters"] = dict(attrs.get("hyperparameters", {}))
        current = by_key.get(row["key"])
        if current is None or _rank(row) >= _rank(current):
            by_key[row["key"]] = row
    return sorted(by_key.values(), key=lambda r: (r["index"], r["variant"]))


def _rank(row: dict) -> tuple:
    return (row["state"] == "COMPLETE", row["number"])


def flat_rows(rows: list[dict]) -> list[dict]:
    """Rows with parameters and hyperparameters as columns (``param:log10_learning_rate``, ``learning_rate``)."""
    flat = []
    for row in rows:
        out = {k: row.get(k) for k in TABLE_COLUMNS}
        out.update({f"param:{k}": v for k, v in row.get("params", {}).items()})
        out.update({k: v for k, v in row.get("hyperparameters", {}).items()})
        flat.append(out)
    return flat
