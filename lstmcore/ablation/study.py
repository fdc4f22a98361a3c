"""Running a study: plan, enqueue, claim, execute, record; resumable.

How a run proceeds (and why re-running the same command resumes):

1. ``study.json`` in the output directory fixes the plan (dataset, space, training, seed, design); a re-run must use the
   same plan settings and may add variants or trials.
2. Trials left RUNNING by a coordinator that is gone (its process is dead on this host, or its heartbeat is older than
   ``stale_after`` seconds) are marked FAIL with status ``interrupted``.
3. Every planned trial that has no COMPLETE trial, no WAITING or live RUNNING trial and no *final* failure is enqueued
   (``study.enqueue_trial`` with its log10 parameters and its plan key). Final failures (``diverged``: no finite
   validation metric; ``error``: the trial raised) are deterministic and are not re-run unless ``retry_failed``;
   ``interrupted`` and ``worker-lost`` attempts are re-run.
4. The coordinator claims WAITING trials with ``study.ask()`` (an atomic pop in every Optuna storage), sends each to a
   worker, and records the result with ``study.tell``: the validation metric as the value, everything else as user
   attributes. Workers never touch the storage, so a worker that outlives a killed coordinator cannot write a
   duplicate.
5. Ctrl-C (SIGINT) or SIGTERM: the trials in progress are recorded as ``interrupted``, the workers are stopped, and
   ``StudyInterrupted`` is raised; the next run re-runs those trials.
"""
from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass

from lstmcore.ablation.config import StudyConfig
from lstmcore.ablation.plan import make_plan, planned_trial
from lstmcore.ablation.storage import open_storage, save_study_file, trial_rows
from lstmcore.ablation.trial import make_task

FINAL_FAILURES = ("diverged", "error")
HEARTBEAT_SECONDS = 20.0


class StudyInterrupted(KeyboardInterrupt):
    """The study stopped on SIGINT/SIGTERM; the trials in progress are recorded as interrupted."""


@dataclass
class RunSummary:
    out_dir: str
    completed: int        # COMPLETE trials in the study
    failed: int           # final failures in the study
    planned: int          # planned trials
    ran: int              # trials finished by this run


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # an earlier run with our pid is gone (we are a different run)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Coordinator:
    """Owns the Optuna study of one run (see the module docstring)."""

    def __init__(self, config: StudyConfig, out_dir, storage_url: str | None = None, stale_after: float = 300.0):
        import optuna

        self.optuna = optuna
        self.out_dir = str(out_dir)
        self.config = save_study_file(out_dir, config, storage_url)
        self.storage = open_storage(out_dir, storage_url)
        self.study = optuna.create_study(study_name=self.config.name, storage=self.storage, direction="minimize",
                                         load_if_exists=True)
        self.study_id = self.storage.get_study_id_from_name(self.config.name)
        self.study.set_user_attr("config", self.config.to_dict())
        self.run_id = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.stale_after = stale_after
        self.claimed: dict[int, object] = {}  # trial number -> optuna.Trial, claimed by this run and not recorded
        self._last_heartbeat = 0.0
        self.heartbeat()

    # -- bookkeeping --------------------------------------------------------------------------------------------------
    def heartbeat(self, force: bool = True) -> None:
        now = time.time()
        if force or now - self._last_heartbeat >= HEARTBEAT_SECONDS:
            self.study.set_user_attr(f"heartbeat:{self.run_id}", now)
            self._last_heartbeat = now

    def _set_attrs(self, number: int, attrs: dict) -> int:
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)
        for key, value in attrs.items():
            self.storage.set_trial_user_attr(trial_id, key, value)
        return trial_id

    def reclaim_stale(self) -> list[str]:
        """Mark RUNNING trials whose coordinator is gone as FAIL/interrupted; return their keys."""
        TrialState = self.optuna.trial.TrialState
        heartbeats = {k.split(":", 1)[1]: v for k, v in self.study.user_attrs.items() if k.startswith("heartbeat:")}
        now = time.time()
        fresh_other_runs = [r for r, t in heartbeats.items() if r != self.run_id and now - t < self.stale_after]
        reclaimed = []
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            owner = trial.user_attrs.get("owner")
            if owner is None:
                stale = not fresh_other_runs
            elif owner.get("host") == self.host and not _pid_alive(int(owner.get("pid", -1))):
                stale = True
            else:
                stale = now - heartbeats.get(owner.get("run_id"), 0.0) > self.stale_after
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
            trial = self.study.ask()
            self.claimed[trial.number] = trial  # from here on, an interrupt records it (see interrupt_claimed)
            key = trial.user_attrs.get("key")
            if key is None:  # another coordinator took the last waiting trial between our check and our ask
                trial.set_user_attr("status", "unplanned")
                self.study.tell(trial, state=TrialState.FAIL)
                del self.claimed[trial.number]
                continue
            trial.set_user_attr("owner", {"run_id": self.run_id, "host": self.host, "pid": os.getpid()})
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
              progress_stream=None, stale_after: float = 300.0) -> RunSummary:
    """Run (or resume) a study; see the module docstring. ``dask``: a scheduler address or a ``distributed.Client``."""
    from lstmcore.ablation import require
    from lstmcore.ablation.analysis import metric_direction
    from lstmcore.ablation.executors import DaskExecutor, LocalExecutor, WorkerLost
    from lstmcore.ablation.progress import Progress

    require()
    coordinator = Coordinator(config, out_dir, storage, stale_after=stale_after)
    config = coordinator.config
    coordinator.reclaim_stale()
    coordinator.enqueue_missing(retry_failed=retry_failed)
    executor = DaskExecutor(dask, blas_threads) if dask is not None else LocalExecutor(jobs, blas_threads)
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
    finally:
        executor.close(cancel=True)  # after an unexpected error too: no worker outlives the coordinator
    progress.close()
    rows = coordinator.rows()
    return RunSummary(out_dir=str(out_dir), completed=sum(r["state"] == "COMPLETE" for r in rows),
                      failed=sum(r["state"] == "FAIL" and r.get("status") in FINAL_FAILURES for r in rows),
                      planned=len(config.variants) * config.trials, ran=ran)
