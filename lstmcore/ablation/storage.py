"""Where a study lives: Optuna storage (an embedded journal file by default, or any Optuna RDB URL) plus
``study.json`` in the study's directory (the configuration and where the storage is).

Each planned trial is one Optuna trial. Its parameters are the sampled (log10) values, its value the validation metric
at the best epoch; its user attributes hold the plan key (``variant/index``), variant, trial index, seed, the
hyperparameter values, test metric, parameter count, epochs, best epoch, wall time, status and reason.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from lstmcore.ablation.config import ConfigError, StudyConfig

STUDY_FILE = "study.json"
JOURNAL_FILE = "study.journal"


class JournalDamaged(ConfigError):
    """The journal file cannot be used as it is; the message says where, why and the way out."""


def _optuna():
    from lstmcore.ablation import require

    require()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# -- the journal file ------------------------------------------------------------------------------------------------
def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return False
    return isinstance(record, dict) and "op_code" in record


def check_journal(path, repair: bool = False, recorded_bytes: int | None = None) -> str | None:
    """Check a journal before Optuna reads it; return a note when its last record was torn.

    - A last record cut short (no newline, or not a record: a kill during a write, NUL bytes of a crash) is what
      every reader already ignores. With ``repair`` (a writer holding the study's lock) it is moved to
      ``JOURNAL.torn-TIME`` and the file truncated after the last complete record; without, it is left alone.
    - Anything else that is not a record, before the last one, is damage: ``JournalDamaged``, nothing written.
    - A file shorter than ``recorded_bytes`` (its size when lstmcore last wrote to it, kept in ``study.json``) lost
      records (cut short, emptied, or an older copy): ``JournalDamaged``.
    """
    path = Path(path)
    data = path.read_bytes()
    segments = data.split(b"\n")  # the last one is what follows the last newline (b"" when the file ends with one)
    good_end = position = 0
    first_bad = None
    for number, segment in enumerate(segments, start=1):
        complete = number < len(segments)
        end = position + len(segment) + complete
        if complete and _is_record(segment):
            if first_bad is not None:
                raise _damaged(path, *first_bad, "and records follow it")
            good_end = end
        elif (segment or complete) and first_bad is None:
            first_bad = (number, position)
        position = end
    tail = data[good_end:]
    if tail.count(b"\n") > 1 and tail.strip(b"\0\n"):  # several lines that are not records: not one torn write
        raise _damaged(path, *first_bad, "nor are the lines after it")
    if recorded_bytes and good_end < recorded_bytes:
        raise JournalDamaged(
            f"{path} holds {good_end} bytes of records but held {recorded_bytes} when lstmcore last wrote to it: it "
            f"was cut short, emptied or replaced by an older copy, and its trials would be silently lost or re-run. "
            f"Restore the complete file from a backup, or start the study again in another --out.")
    note = None
    if good_end < len(data):
        torn = len(data) - good_end
        if repair:
            kept = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}")
            kept.write_bytes(data[good_end:])
            from lstmcore.ablation.locks import journal_lock

            lock = journal_lock(str(path))
            if lock is not None:
                lock.acquire()
            try:
                with open(path, "r+b") as handle:
                    handle.truncate(good_end)
                    os.fsync(handle.fileno())
            finally:
                if lock is not None:
                    lock.release()
            note = (f"{path}: its last record was incomplete (a write cut short, {torn} bytes); it was removed and "
                    f"kept in {kept.name}, and the study goes on from the complete records")
        else:
            note = f"{path}: its last record is incomplete ({torn} bytes, a write cut short or in progress); ignored"
    return note


def _damaged(path, line: int, offset: int, what: str) -> JournalDamaged:
    return JournalDamaged(f"{path} is damaged at line {line} (byte {offset}): not a journal record, {what}. Nothing "
                          f"was written to it. Restore it from a backup, or move it (and study.json) away to start "
                          f"the study again.")


def open_storage(out_dir: str | os.PathLike, url: str | None = None, *, create: bool = True, repair: bool = False,
                 recorded_bytes: int | None = None, notes: list | None = None):
    """An Optuna storage: ``url`` (``postgresql://...``, ``sqlite:///...``) or the journal file in ``out_dir``
    (checked with ``check_journal``; ``create=False``: it must exist). ``ConfigError`` with one line for a storage
    that cannot be opened; notes about a torn last record are appended to ``notes``."""
    optuna = _optuna()
    if url:
        return _open_rdb(optuna, url)
    from optuna.storages.journal import JournalFileBackend

    from lstmcore.ablation.locks import journal_lock

    path = Path(out_dir) / JOURNAL_FILE
    if path.exists():
        note = check_journal(path, repair=repair, recorded_bytes=recorded_bytes)
        if note and notes is not None:
            notes.append(note)
    elif not create:
        raise FileNotFoundError(f"{path} not found: the study's journal is missing (restore it, e.g. with gunzip "
                                f"if it was compressed)")
    elif recorded_bytes:
        raise JournalDamaged(f"{path} is missing, but {Path(out_dir) / STUDY_FILE} says the study was run there: "
                             f"restore the journal from a backup, or start the study again in another --out.")
    else:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.JournalStorage(JournalFileBackend(str(path), lock_obj=journal_lock(str(path))))
    except Exception as exc:  # records that are JSON but not operations Optuna can replay
        raise JournalDamaged(f"{path} cannot be replayed by Optuna ({type(exc).__name__}: {exc}): restore it from a "
                             f"backup, or move it (and study.json) away to start the study again.") from None


def shown_url(url: str) -> str:
    """A storage URL for messages: its password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: nothing to hide that we could find
        return url


def _open_rdb(optuna, url: str):
    shown = shown_url(url)
    scheme = url.partition("://")[0].lower()
    if not scheme or "://" not in url:
        raise ConfigError(f"--storage {shown!r} is not an Optuna RDB URL such as postgresql://user@host/db or "
                          f"sqlite:///path/trials.db")
    if scheme.startswith("sqlite") and url.partition("://")[2].strip("/") in ("", ":memory:"):
        raise ConfigError(f"--storage {shown}: an in-memory SQLite database would lose every trial when the command "
                          f"ends; give a file, sqlite:///path/trials.db")
    engine_kwargs = {"connect_args": {"connect_timeout": 10}} if scheme.startswith("postgresql") else {}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    except ImportError:
        if scheme.startswith("postgresql"):
            raise ConfigError(f"--storage {shown}: PostgreSQL needs the psycopg 3 driver: "
                              f"pip install \"lstmcore[postgres]\"") from None
        raise ConfigError(f"--storage {shown}: the driver of this database is not installed") from None
    except Exception as exc:
        from sqlalchemy.exc import NoSuchModuleError

        if isinstance(exc, NoSuchModuleError):
            raise ConfigError(f"--storage {shown}: unknown kind of database {scheme!r}; use postgresql://, "
                              f"sqlite:/// or another SQLAlchemy URL") from None
        text = " ".join(str(getattr(exc, "orig", None) or exc).split())
        if scheme.startswith("sqlite") and "unable to open" in text:
            folder = Path(url.partition(":///")[2]).parent
            text += f" (does the folder {folder} exist and is it writable?)"
        raise ConfigError(f"--storage {shown}: cannot open the database: {text[:300]}") from None


# -- study.json ------------------------------------------------------------------------------------------------------
def read_study_file(out_dir) -> dict:
    path = Path(out_dir) / STUDY_FILE
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise ConfigError(f"{out_dir} is a file, not a study directory")
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: {out_dir} is not a study directory (run `lstmcore ablate --out "
                                f"{out_dir}` first)")
    try:
        info = json.loads(path.read_text())
        StudyConfig.from_dict(info["config"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path} is damaged ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}): restore "
                          f"it from a backup; it holds the plan the journal's trials belong to") from None
    return info


def write_study_file(out_dir, info: dict) -> None:
    """Replace ``study.json`` atomically (a kill leaves the old or the new file, never half of one)."""
    path = Path(out_dir) / STUDY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info, indent=2, default=str))
    tmp.replace(path)


def grown_config(previous: dict | None, config: StudyConfig, storage_url: str | None) -> StudyConfig:
    """The configuration of a run in a directory holding ``previous`` (its ``study.json``, or ``None``): ``config``,
    grown to keep the variants and trials of the earlier runs, and their study name. Another plan or another storage
    is refused."""
    if previous is None:
        return config
    old = StudyConfig.from_dict(previous["config"])
    if old.fingerprint != config.fingerprint:
        changed = [k for k, v in config.plan_definition().items() if old.plan_definition()[k] != v]
        raise ConfigError(
            f"this directory holds a study with different settings ({', '.join(changed)} changed); a study can only "
            f"grow (more variants or trials) when resumed. Use another --out, or the same settings.")
    if previous.get("storage") != storage_url:
        raise ConfigError(f"this directory was run with storage "
                          f"{shown_url(previous['storage']) if previous.get('storage') else 'journal file'}; "
                          f"pass the same --storage to resume it")
    if config.name and old.name and config.name != old.name:
        raise ConfigError(f"this directory's study is named {old.name!r}, not {config.name!r}")
    variants = old.variants + [v for v in config.variants if v not in old.variants]
    return StudyConfig.from_dict({**config.to_dict(), "variants": variants, "name": old.name or config.name,
                                  "trials": max(old.trials, config.trials), "baseline": config.baseline})


def load_study(out_dir, url: str | None = None, name: str | None = None):
    """The Optuna study of a study directory, for reading (the report); the journal is checked, never changed."""
    optuna = _optuna()
    info = read_study_file(out_dir)
    url = url or info.get("storage")
    name = name or info["config"]["name"]
    storage = open_storage(out_dir, url, create=False, recorded_bytes=info.get("journal_bytes"))
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        where = f"the storage {shown_url(url)}" if url else f"{Path(out_dir) / JOURNAL_FILE} (it holds no study)"
        raise FileNotFoundError(f"no study named {name!r} in {where}, though {Path(out_dir) / STUDY_FILE} says it "
                                f"was run there: restore the storage, or pass the right one") from None


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
