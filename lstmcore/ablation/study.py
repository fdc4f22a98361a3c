"""Running a study: plan, enqueue, claim, execute, record; resumable.

How a run proceeds (and why re-running the same command resumes):

1. Everything is checked before anything is written: worker counts, the output directory, the dataset, the lock on
   the directory (one coordinator per directory), the storage (a damaged journal is refused; a torn last record is
   set aside), the Dask scheduler. ``study.json`` in the output directory then fixes the plan (dataset, space,
   training, seed, design), the study's own name in the storage and each variant's identity; a re-run must use the
   same plan settings and variants and may add variants or trials.
2. Trials left RUNNING by a coordinator that is gone (its process is dead on this host, or it ended, or its
   heartbeat is older than ``stale_after`` seconds) are marked FAIL with status ``interrupted``.
3. Every planned trial that has no COMPLETE trial, no WAITING or live RUNNING trial and no *final* failure is enqueued
   (``study.enqueue_trial`` with its log10 parameters and its plan key). Final failures (``diverged``: no finite
   validation metric; ``error``: the trial raised) are deterministic and are not re-run unless ``retry_failed``;
   ``interrupted`` and ``worker-lost`` attempts are re-run.
4. The coordinator claims WAITING trials with ``study.ask()`` (an atomic pop in every Optuna storage), sends each to a
   worker, and records the result with ``study.tell``: the validation metric as the value, everything else as user
   attributes. Workers never touch the storage, so a worker that outlives a killed coordinator cannot write a
   duplicate; and they exit when their coordinator dies.
5. Ctrl-C (SIGINT) or SIGTERM: the trials in progress are recorded as ``interrupted``, the workers are stopped, and
   ``StudyInterrupted`` is raised; the next run re-runs those trials. A claim or a result is recorded whole: the
   signal waits for it (``deferred_interrupts``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from lstmcore.ablation.config import ConfigError, StudyConfig
from lstmcore.ablation.locks import StudyBusy, StudyLock, process_alive, this_process
from lstmcore.ablation.plan import make_plan, planned_trial
from lstmcore.ablation.storage import (JOURNAL_FILE, grown_config, open_storage, read_study_file, shown_url,
                                       trial_rows, write_study_file)
from lstmcore.ablation.trial import check_trial_setup, make_task

FINAL_FAILURES = ("diverged", "error")
HEARTBEAT_SECONDS = 20.0
#: the size of the parameter shapes recorded in a variant's identity (distinct, so that swapped axes show)
IDENTITY_SIZES = (5, 7)


class StudyInterrupted(KeyboardInterrupt):
    """The study stopped on SIGINT/SIGTERM; the trials in progress are recorded as interrupted."""


@dataclass
class RunSummary:
    out_dir: str
    completed: int        # COMPLETE trials in the study
    failed: int           # final failures in the study
    planned: int          # planned trials
    ran: int              # trials finished by this run


@contextlib.contextmanager
def deferred_interrupts():
    """Hold SIGINT and SIGTERM until the block is done, then raise ``KeyboardInterrupt``: a claim or a result is
    recorded whole, never half (an interrupt between ``ask`` and recording the claim left a RUNNING trial that no run
    owned). Outside the main thread, where handlers cannot be set, the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = {signum: signal.signal(signum, lambda number, frame: pending.append(number))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if pending:
        raise KeyboardInterrupt


def variant_identity(name: str) -> dict:
    """What defines a variant for a study: where it comes from (``built-in`` with lstmcore's version, or the plugin's
    distribution and version), its class, its spec (the dataclass fields of a ``GatedCell``) and its parameter
    shapes at ``IDENTITY_SIZES``."""
    import lstmcore
    from lstmcore.plugins import BUILTIN_SOURCE, registry

    variant = lstmcore.get_variant(name)
    source = registry.source(name)
    if source == BUILTIN_SOURCE:
        source = f"{BUILTIN_SOURCE} (lstmcore {lstmcore.__version__})"
    spec = ({f.name: str(getattr(variant, f.name)) for f in dataclasses.fields(variant) if f.name != "description"}
            if dataclasses.is_dataclass(variant) else {})
    shapes = {key: list(shape) for key, shape in variant.parameter_shapes(*IDENTITY_SIZES).items()}
    return {"source": source, "class": f"{type(variant).__module__}.{type(variant).__qualname__}", "spec": spec,
            "parameter_shapes": shapes}


def _differences(old: dict, new: dict) -> str:
    return "; ".join(f"{key} {old.get(key)} -> {new.get(key)}" for key in new if old.get(key) != new.get(key))


class Coordinator:
    """Owns the Optuna study of one run (see the module docstring)."""

    def __init__(self, config: StudyConfig, out_dir, storage_url: str | None = None, stale_after: float = 300.0,
                 accept_variant_changes: bool = False):
        """Check the run against the directory's ``study.json`` (plan, storage, variants); nothing is written until
        ``open``."""
        self.out_dir = str(out_dir)
        self.storage_url = storage_url
        self.previous = read_study_file(out_dir) if (Path(out_dir) / "study.json").exists() else None
        self.config = grown_config(self.previous, config, storage_url)
        if not self.config.name:  # a new study: a name of its own, so that studies sharing a database never merge
            self.config = dataclasses.replace(self.config, name=f"lstmcore-{uuid.uuid4().hex[:12]}")
        self.variants = self._check_variants(self.previous, accept_variant_changes)
        self.stale_after = stale_after

    def open(self, storage) -> "Coordinator":
        """Open (or create) the study in ``storage`` and start this run's heartbeat."""
        import optuna

        self.optuna = optuna
        self.storage = storage
        self.study = self._open_study(self.previous)
        self.study_id = self.storage.get_study_id_from_name(self.config.name)
        self.study.set_user_attr("config", self.config.to_dict())
        self.study.set_user_attr("fingerprint", self.config.fingerprint)
        self.study.set_user_attr("variants", self.variants)
        self.run_id = uuid.uuid4().hex
        self.process = this_process()
        self.host = self.process["host"]
        self.claimed: dict[int, object] = {}  # trial number -> optuna.Trial, claimed by this run and not recorded
        self._last_heartbeat = 0.0
        self.heartbeat()
        self.checkpoint()
        return self

    # -- identity -----------------------------------------------------------------------------------------------------
    def _check_variants(self, previous: dict | None, accept_changes: bool) -> dict:
        """Every variant's identity now; a variant that changed since the study ran it is refused unless
        ``accept_changes`` (then the change is recorded in ``study.json``)."""
        recorded = (previous or {}).get("variants", {})
        current = {name: variant_identity(name) for name in self.config.variants}
        changed = {name: _differences(recorded[name], identity) for name, identity in current.items()
                   if name in recorded and recorded[name] != identity}
        if changed and not accept_changes:
            first = next(iter(changed))
            raise ConfigError(
                f"variant {first!r} changed since this study ran it ({changed[first]})"
                + (f", and {len(changed) - 1} more" if len(changed) > 1 else "")
                + ": its new trials would not be comparable with the old ones. Reinstall the version the study ran "
                  "with, use another --out, or pass --accept-variant-changes to go on (recorded in study.json)")
        self.variant_changes = list((previous or {}).get("variant_changes", []))
        self.variant_changes += [{"variant": name, "change": text, "accepted": time.strftime("%Y-%m-%d %H:%M:%S")}
                                 for name, text in changed.items()]
        return {**recorded, **current}

    def _open_study(self, previous: dict | None):
        """The study named in the configuration: created for a new directory; for an existing one it must be in the
        storage and hold the same plan (a storage, e.g. one PostgreSQL database, may hold many studies)."""
        name = self.config.name
        try:
            study = self.optuna.load_study(study_name=name, storage=self.storage)
        except KeyError:
            study = None
        if study is None:
            if previous is not None:
                where = (f"the storage {shown_url(self.storage_url)}" if self.storage_url
                         else f"{Path(self.out_dir) / JOURNAL_FILE}, which holds no study (was it emptied or "
                              f"replaced?)")
                raise ConfigError(f"no study named {name!r} in {where}, though {Path(self.out_dir) / 'study.json'} "
                                  f"says it was run there: restore the storage, or start again in another --out")
            return self.optuna.create_study(study_name=name, storage=self.storage, direction="minimize")
        stored = study.user_attrs.get("fingerprint")
        if stored is None and "config" in study.user_attrs:
            stored = StudyConfig.from_dict(study.user_attrs["config"]).fingerprint
        if stored != self.config.fingerprint:
            raise ConfigError(f"the storage already holds a study named {name!r} with another plan (fingerprint "
                              f"{stored}, this one {self.config.fingerprint}); a storage can hold many studies, each "
                              f"under its own name: remove name from [study], or choose another one")
        return study

    # -- bookkeeping --------------------------------------------------------------------------------------------------
    def heartbeat(self, force: bool = True, stopped: bool = False) -> None:
        """Tell other runs that this one is alive (``stopped``: that it has ended)."""
        now = time.time()
        if force or stopped or now - self._last_heartbeat >= HEARTBEAT_SECONDS:
            self.study.set_user_attr(f"heartbeat:{self.run_id}", {**self.process, "time": now, "stopped": stopped})
            self._last_heartbeat = now

    def checkpoint(self) -> None:
        """Write ``study.json``: the plan, the variants' identities and how large the journal is now (a journal
        found shorter later lost records)."""
        info = {"config": self.config.to_dict(), "fingerprint": self.config.fingerprint,
                "storage": self.storage_url, "variants": self.variants}
        if self.variant_changes:
            info["variant_changes"] = self.variant_changes
        if not self.storage_url:
            info["journal_bytes"] = (Path(self.out_dir) / JOURNAL_FILE).stat().st_size
        write_study_file(self.out_dir, info)

    def _set_attrs(self, number: int, attrs: dict) -> int:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        for key, value in attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, value)
        return trial_id

    def _run_alive(self, heartbeat, now: float) -> bool:
        """Whether the run of a heartbeat may still own trials: a process on this host that is gone is not, whatever
        its last heartbeat; a run on another host is alive while its heartbeat is fresh."""
        if not isinstance(heartbeat, dict):  # an earlier lstmcore wrote the time alone
            return now - float(heartbeat) < self.stale_after
        if heartbeat.get("stopped"):
            return False
        if heartbeat.get("host") == self.host and heartbeat.get("pid") == self.process["pid"]:
            return False  # an earlier run of this process (one process runs one study at a time)
        alive = process_alive(heartbeat)
        return alive if alive is not None else now - heartbeat.get("time", 0.0) < self.stale_after

    def reclaim_stale(self) -> list[str]:
        """Mark RUNNING trials whose coordinator is gone as FAIL/interrupted; return their keys."""
        TrialState = self.optuna.trial.TrialState
        heartbeats = {k.split(":", 1)[1]: v for k, v in self.study.user_attrs.items() if k.startswith("heartbeat:")}
        now = time.time()
        alive = {run for run, beat in heartbeats.items() if run != self.run_id and self._run_alive(beat, now)}
        reclaimed = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get("owner")
            if owner is None:  # claimed by a run that stopped before recording the claim
                started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
                stale = not alive or now - started > self.stale_after
            elif owner.get("run_id") in heartbeats:
                stale = owner["run_id"] not in alive
            else:
                stale = process_alive(owner) is not True
            if stale:
                trial_id = self._set_attrs(trial.number, {
                    "state": "FAIL", "status": "interrupted",
                    "reason": "its coordinator stopped before the trial finished (re-run on resume)"})
                self.storage.set_trial_state_values(trial_id, TrialState.FAIL)
                reclaimed.append(trial.user_attrs.get("key", f"#{trial.number}"))
        return reclaimed

    def enqueue_missing(self, retry_failed: bool = False) -> int:
        """Enqueue the planned trials that still need a run; return how many."""
        TrialState = self.optuna.trial.TrialState
        states: dict[str, list] = {}
        for trial in self.study.get_trials(deepcopy=False):
            key = trial.user_attrs.get("key")
            if key is not None:
                states.setdefault(key, []).append((trial.state, trial.user_attrs.get("status")))
        count = 0
        for planned in make_plan(self.config):
            attempts = states.get(planned.key, [])
            if any(state in (TrialState.COMPLETE, TrialState.WAITING, TrialState.RUNNING) for state, _ in attempts):
                continue
            if not retry_failed and any(status in FINAL_FAILURES for _, status in attempts):
                continue
            self.study.enqueue_trial(planned.parameters, user_attrs={
                "key": planned.key, "variant": planned.variant, "index": planned.index, "seed": planned.seed,
                "hyperparameters": planned.hyperparameters})
            count += 1
        return count

    def claim(self):
        """Pop the next WAITING planned trial (``None`` when there is none): ``(trial, planned)``."""
        TrialState = self.optuna.trial.TrialState
        while self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            with deferred_interrupts():  # the claim is recorded (owner, and self.claimed) before an interrupt acts
                trial = self.study.ask()
                self.claimed[trial.number] = trial  # from here on, an interrupt records it (see interrupt_claimed)
                key = trial.user_attrs.get("key")
                if key is None:  # another coordinator took the last waiting trial between our check and our ask
                    trial.set_user_attr("status", "unplanned")
                    self.study.tell(trial, state=TrialState.FAIL)
                    del self.claimed[trial.number]
                    continue
                trial.set_user_attr("owner", {"run_id": self.run_id, **self.process})
            planned = planned_trial(self.config, trial.user_attrs["variant"], int(trial.user_attrs["index"]))
            for dim in self.config.space.searched:  # record the distributions; the values are the enqueued ones
                low, high = dim.bounds
                trial.suggest_float(dim.parameter, low, high)
            return trial, planned
        return None

    def record(self, trial, result: dict) -> dict:
        """Store a worker's result (``trial`` is the asked ``optuna.Trial``); return its table row."""
        TrialState = self.optuna.trial.TrialState
        fields = ("state", "status", "reason", "valid", "test", "metric", "parameter_count", "epochs", "best_epoch",
                  "wall_time", "train_time")
        with deferred_interrupts():  # a finished trial's result is stored whole
            for name in fields:
                if name in result:
                    trial.set_user_attr(name, result[name])
            trial.set_user_attr("worker", {"host": result.get("host"), "pid": result.get("pid")})
            if "traceback" in result:
                trial.set_user_attr("traceback", result["traceback"])
            if result.get("state") == "COMPLETE":
                self.study.tell(trial, result["valid"])
            else:
                self.study.tell(trial, state=TrialState.FAIL)
            self.claimed.pop(trial.number, None)
            self.checkpoint()
        row = {k: result.get(k) for k in fields}
        row.update(key=trial.user_attrs["key"], variant=trial.user_attrs["variant"],
                   index=trial.user_attrs["index"])
        return row

    def interrupt_claimed(self) -> int:
        """Record every trial this run claimed and did not finish as FAIL/interrupted; return how many."""
        count = 0
        for trial in list(self.claimed.values()):
            trial.set_user_attr("state", "FAIL")
            trial.set_user_attr("status", "interrupted")
            trial.set_user_attr("reason", "the study was interrupted (re-run on resume)")
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL, skip_if_finished=True)
            count += 1
        self.claimed.clear()
        return count

    def rows(self) -> list[dict]:
        return trial_rows(self.study)


def run_study(config: StudyConfig, out_dir, *, jobs: int | None = None, dask=None, storage: str | None = None,
              blas_threads: int | None = None, quiet: bool = False, retry_failed: bool = False,
              progress_stream=None, stale_after: float = 300.0, accept_variant_changes: bool = False) -> RunSummary:
    """Run (or resume) a study; see the module docstring. ``dask``: a scheduler address or a ``distributed.Client``.

    Everything that can be checked is checked before anything is written and before any trial runs (``ConfigError``
    with one line): the worker counts, the output directory, the dataset and its options (loaded once here, unless
    the trials run on Dask), the lock on the directory, the storage, the Dask scheduler, the plan and the variants.
    """
    import sys

    from lstmcore.ablation import require
    from lstmcore.ablation.executors import DaskExecutor, LocalExecutor

    require()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a directory")
    executor = LocalExecutor(jobs, blas_threads) if dask is None else None  # checks --jobs and --threads
    check_trial_setup(config, load=dask is None)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the directory: {exc.strerror}") from None
    try:
        with StudyLock(out):
            coordinator = Coordinator(config, out, storage, stale_after=stale_after,
                                      accept_variant_changes=accept_variant_changes)
            notes: list[str] = []
            store = open_storage(out, storage, repair=True, notes=notes,
                                 recorded_bytes=(coordinator.previous or {}).get("journal_bytes"))
            for note in notes:
                print(f"lstmcore ablate: {note}", file=progress_stream or sys.stderr)
            if executor is None:
                executor = DaskExecutor(dask, blas_threads)
            try:
                coordinator.open(store)
                return _run(coordinator, executor, quiet=quiet, retry_failed=retry_failed,
                            progress_stream=progress_stream)
            finally:
                executor.close(cancel=True)  # after an unexpected error too: no worker outlives the coordinator
    except StudyBusy as exc:
        raise ConfigError(str(exc)) from None


def _run(coordinator: Coordinator, executor, *, quiet: bool, retry_failed: bool, progress_stream) -> RunSummary:
    """Steps 2-5 of the module docstring, for a coordinator that owns the study directory."""
    from lstmcore.ablation.analysis import metric_direction
    from lstmcore.ablation.executors import WorkerLost
    from lstmcore.ablation.progress import Progress

    config = coordinator.config
    try:
        coordinator.reclaim_stale()
        coordinator.enqueue_missing(retry_failed=retry_failed)
        rows = coordinator.rows()
        metric = next((r["metric"] for r in rows if r.get("metric")), None)
        progress = Progress(config.variants, config.trials, rows, metric_direction(metric),
                            live=False if quiet else None, stream=progress_stream, concurrency=executor.capacity)
        progress.start(executor.description)
        in_flight: dict = {}
        ran = 0
        try:
            while True:
                while len(in_flight) < executor.capacity:
                    claimed = coordinator.claim()
                    if claimed is None:
                        break
                    trial, planned = claimed
                    with deferred_interrupts():  # starting a worker process is not to be cut in half either
                        handle = executor.submit(make_task(config, planned, executor.blas_threads))
                        in_flight[handle] = trial
                    progress.trial_started(planned.key)
                if not in_flight:
                    break
                for handle in executor.wait(list(in_flight), timeout=2.0):
                    trial = in_flight.pop(handle)
                    try:
                        result = executor.result(handle)
                    except WorkerLost as exc:
                        result = {"state": "FAIL", "status": "worker-lost", "reason": str(exc)}
                    progress.trial_finished(coordinator.record(trial, result))
                    ran += 1
                coordinator.heartbeat(force=False)
                progress.draw()
        except KeyboardInterrupt:
            executor.close(cancel=True)
            interrupted = coordinator.interrupt_claimed()  # in flight, or claimed and not yet sent to a worker
            progress.close()
            raise StudyInterrupted(f"study interrupted; {interrupted} trial(s) in progress recorded as interrupted. "
                                   f"Run the same command again to resume.") from None
        progress.close()
        rows = coordinator.rows()
        return RunSummary(out_dir=coordinator.out_dir, completed=sum(r["state"] == "COMPLETE" for r in rows),
                          failed=sum(r["state"] == "FAIL" and r.get("status") in FINAL_FAILURES for r in rows),
                          planned=len(config.variants) * config.trials, ran=ran)
    finally:
        with contextlib.suppress(Exception):  # the run has ended: its claims are no one's (see reclaim_stale)
            coordinator.heartbeat(stopped=True)
            coordinator.checkpoint()
