"""Studies that really train: local workers vs a Dask LocalCluster, failures, resume after SIGKILL, the CLI.

Subprocesses run outside the repository root, so the installed package is imported (not the source tree).
"""
import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow  # runs real studies in worker processes and subprocesses

pytest.importorskip("optuna")
pytest.importorskip("distributed")
pytest.importorskip("matplotlib")
pytest.importorskip("sklearn")

from lstmcore.ablation.config import StudyConfig  # noqa: E402
from lstmcore.ablation.storage import load_study, trial_rows  # noqa: E402
from lstmcore.ablation.study import run_study  # noqa: E402

TINY = {"study": {"variants": "peephole,vanilla", "dataset": "adding", "trials": 2, "seed": 3},
        "dataset": {"length": 10, "n_train": 64, "n_valid": 32, "n_test": 32},
        "training": {"batch_size": 8, "max_epochs": 2},
        "space": {"hidden_size": {"distribution": "log_uniform", "low": 4, "high": 8},
                  "learning_rate": {"distribution": "log_uniform", "low": 1e-3, "high": 1e-1}}}


def _config(**tables):
    layers = [TINY] + [{name: values} for name, values in tables.items()]
    return StudyConfig.from_tables(*layers)


def _results(out_dir):
    return {r["key"]: (r["state"], r["valid"], r["test"], r["parameter_count"], r["seed"])
            for r in trial_rows(load_study(out_dir))}


def test_local_workers_and_dask_local_cluster_give_the_same_results(tmp_path):
    from distributed import Client, LocalCluster

    config = _config()
    local = run_study(config, tmp_path / "local", jobs=2, blas_threads=1, quiet=True)
    assert local.completed == local.planned == 4
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        remote = run_study(config, tmp_path / "dask", dask=client, blas_threads=1, quiet=True)
        worker_pids = set(client.run(os.getpid).values())
    assert remote.completed == 4
    local_results, dask_results = _results(tmp_path / "local"), _results(tmp_path / "dask")
    assert local_results == dask_results
    assert len({v[1] for v in local_results.values()}) == 4  # four different trials, not one repeated
    assert all(t.user_attrs["worker"]["pid"] in worker_pids for t in load_study(tmp_path / "dask").get_trials())


def test_divergent_and_raising_trials_are_recorded_and_the_study_goes_on(tmp_path):
    diverging = _config(training={"batch_size": 8, "max_epochs": 2, "learning_rate": 1e4})
    summary = run_study(diverging, tmp_path / "diverge", jobs=1, blas_threads=1, quiet=True)
    rows = trial_rows(load_study(tmp_path / "diverge"))
    assert summary.completed == 0 and summary.failed == 4 and len(rows) == 4
    assert all(r["state"] == "FAIL" and r["status"] == "diverged" and ("inf" in r["reason"] or "nan" in r["reason"])
               for r in rows)
    # final failures are deterministic: a re-run does not repeat them, --retry-failed does
    assert run_study(diverging, tmp_path / "diverge", jobs=1, blas_threads=1, quiet=True).ran == 0
    assert run_study(diverging, tmp_path / "diverge", jobs=1, blas_threads=1, quiet=True, retry_failed=True).ran == 4


def test_a_trial_that_raises_is_recorded_with_its_traceback(tmp_path, monkeypatch):
    (tmp_path / "worker_only_failure.py").write_text(
        WORKER_ONLY + "        raise LookupError('no data on this worker')\n"
        "    return adding_problem(length=5, n_train=8, n_valid=4, n_test=4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get the parent's sys.path
    raising = StudyConfig.from_tables(TINY, {"study": {"dataset": "worker_only_failure:load"}})
    summary = run_study(raising, tmp_path / "raise", jobs=1, blas_threads=1, quiet=True)
    rows = trial_rows(load_study(tmp_path / "raise"))
    assert summary.failed == 4
    assert all(r["status"] == "error" and "LookupError: no data on this worker" in r["reason"] for r in rows)
    trial = load_study(tmp_path / "raise").get_trials()[0]
    assert "worker_only_failure.py" in trial.user_attrs["traceback"]


#: a dataset that loads in the coordinator (which checks it before any trial) and misbehaves in the workers
WORKER_ONLY = """
import multiprocessing
import os

from lstmcore.datasets import adding_problem


def load():
    if multiprocessing.parent_process() is not None:  # a worker process
"""


def test_a_study_directory_refuses_another_plan(tmp_path):
    from lstmcore.ablation.config import ConfigError

    run_study(_config(), tmp_path, jobs=1, blas_threads=1, quiet=True)
    with pytest.raises(ConfigError, match="seed changed"):
        run_study(StudyConfig.from_tables(TINY, {"study": {"seed": 4}}), tmp_path, jobs=1, quiet=True)
    grown = run_study(StudyConfig.from_tables(TINY, {"study": {"trials": 3}}), tmp_path, jobs=1, blas_threads=1,
                      quiet=True)
    assert grown.ran == 2 and grown.completed == 6  # growing runs only the new trials


def _cli(*args, cwd, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lstmcore", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


SLOW_TRIALS = ["ablate", "--variants", "peephole,vanilla", "--dataset", "adding", "--dataset-option", "length=20",
               "--dataset-option", "n_train=400", "--dataset-option", "n_valid=100", "--dataset-option", "n_test=100",
               "--trials", "4", "--epochs", "6", "--batch-size", "4", "--param", "hidden_size=16",
               "--param", "learning_rate=log_uniform:1e-3:1e-2", "--jobs", "1", "--threads", "1", "--quiet"]


def test_sigkill_mid_trial_then_resume_loses_and_duplicates_nothing(tmp_path):
    out = tmp_path / "study"
    process = _cli(*SLOW_TRIALS, "--out", str(out), cwd=tmp_path, start_new_session=True)
    before = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        try:
            study = load_study(out)
            trials = study.get_trials()
        except Exception:  # not created yet, or a line being written
            continue
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        running = [t for t in trials if t.state.name == "RUNNING" and "owner" in t.user_attrs]
        if len(complete) >= 2 and running:
            os.killpg(process.pid, signal.SIGKILL)  # the coordinator and its worker, mid-trial
            process.wait()
            before = {t.user_attrs["key"]: (t.number, t.value, t.user_attrs["test"])
                      for t in load_study(out).get_trials() if t.state.name == "COMPLETE"}
            killed_key = running[0].user_attrs["key"]
            break
    assert before is not None, f"the study never had 2 complete trials and one running: {process.communicate()}"
    assert killed_key not in before

    resumed = _cli(*SLOW_TRIALS, "--out", str(out), "--report", cwd=tmp_path)
    stdout, stderr = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, stderr
    assert "8 of 8 planned trials complete" in stdout

    trials = load_study(out).get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    keys = [t.user_attrs["key"] for t in complete]
    assert sorted(keys) == sorted(f"{v}/{i}" for v in ("peephole", "vanilla") for i in range(4))  # none duplicated
    after = {t.user_attrs["key"]: (t.number, t.value, t.user_attrs["test"]) for t in complete}
    assert all(after[key] == value for key, value in before.items())  # none lost or re-run
    (interrupted,) = [t for t in trials if t.state.name == "FAIL"]
    assert interrupted.user_attrs["key"] == killed_key and interrupted.user_attrs["status"] == "interrupted"
    assert not [t for t in trials if t.state.name in ("RUNNING", "WAITING")]
    assert (out / "report" / "report.md").exists() and (out / "report" / "report.html").exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_or_sigterm_stops_cleanly_and_records_the_running_trial(tmp_path, signum):
    out = tmp_path / "study"
    # far more trials than can finish before the signal, so that a trial is running when it comes, however fast
    trials = [*SLOW_TRIALS[:SLOW_TRIALS.index("--trials") + 1], "400", *SLOW_TRIALS[SLOW_TRIALS.index("--trials") + 2:]]
    process = _cli(*trials, "--out", str(out), cwd=tmp_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            if any(t.state.name == "RUNNING" and "owner" in t.user_attrs for t in load_study(out).get_trials()):
                break
        except Exception:
            continue
    assert process.poll() is None, "the study ended before a trial was seen running"
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Run the same command again to resume" in stderr
    states = [(t.state.name, t.user_attrs.get("status")) for t in load_study(out).get_trials()]
    assert ("FAIL", "interrupted") in states and ("RUNNING", None) not in states


def test_cli_errors_and_report_command(tmp_path):
    bad = _cli("ablate", "--variants", "peephole,nosuch", "--out", str(tmp_path / "x"), cwd=tmp_path)
    _, stderr = bad.communicate(timeout=60)
    assert bad.returncode == 2 and "unknown variant 'nosuch'" in stderr and "vanilla" in stderr
    missing = _cli("report", str(tmp_path / "nothing"), cwd=tmp_path)
    _, stderr = missing.communicate(timeout=60)
    assert missing.returncode == 2 and "not a study directory" in stderr


USER_DATASET = '''
import numpy as np
from lstmcore.datasets import from_sequences


def running_sum(n=60, seed=0):
    """A user dataset: predict the running sum of a random walk's steps."""
    rng = np.random.default_rng(seed)
    xs = [rng.normal(size=(int(rng.integers(3, 9)), 1)) for _ in range(n)]
    return from_sequences(xs, [np.cumsum(x, axis=0) for x in xs], output="linear", seed=seed, name="running_sum")
'''


def test_user_dataset_and_an_rdb_storage_url(tmp_path, monkeypatch):
    (tmp_path / "my_sequences.py").write_text(USER_DATASET)
    monkeypatch.syspath_prepend(str(tmp_path))  # spawned workers get the parent's sys.path
    config = StudyConfig.from_tables(TINY, {"study": {"dataset": "my_sequences:running_sum"},
                                            "dataset": {"n": 40, "seed": 1}})
    assert config.dataset_options == {"n": 40, "seed": 1}  # TINY's adding-problem options are dropped
    url = f"sqlite:///{tmp_path / 'trials.db'}"
    summary = run_study(config, tmp_path / "study", jobs=1, blas_threads=1, quiet=True, storage=url)
    assert summary.completed == 4, trial_rows(load_study(tmp_path / "study"))
    assert (tmp_path / "trials.db").exists() and not (tmp_path / "study" / "study.journal").exists()
    rows = trial_rows(load_study(tmp_path / "study"))  # study.json remembers the storage URL
    assert {r["metric"] for r in rows} == {"mse"} and all(r["test"] > 0 for r in rows)
    from lstmcore.ablation.config import ConfigError

    with pytest.raises(ConfigError, match="pass the same --storage"):
        run_study(config, tmp_path / "study", jobs=1, quiet=True)


def test_a_worker_process_that_dies_is_recorded_and_the_pool_restarts(tmp_path, monkeypatch):
    (tmp_path / "crashing_dataset.py").write_text(WORKER_ONLY + "        os._exit(3)\n"
                                                  "    return adding_problem(length=5, n_train=8, n_valid=4, n_test=4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    config = StudyConfig.from_tables(TINY, {"study": {"dataset": "crashing_dataset:load", "variants": "vanilla"}})
    summary = run_study(config, tmp_path / "study", jobs=1, blas_threads=1, quiet=True)
    rows = trial_rows(load_study(tmp_path / "study"))
    # the second trial ran in a new pool after the first one's worker died
    assert summary.ran == 2 and [r["status"] for r in rows] == ["worker-lost", "worker-lost"]
    assert all("worker process died" in r["reason"] for r in rows)
    # not a final failure: a re-run tries them again
    assert run_study(config, tmp_path / "study", jobs=1, blas_threads=1, quiet=True).ran == 2
