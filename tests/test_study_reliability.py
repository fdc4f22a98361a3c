"""Studies under abuse: bad command lines, damaged journals, interrupts and kills, two coordinators, changed variants,
several studies in one database (issue 9, items 10-17).

CLI cases run ``lstmcore.cli.main`` in this process (the same code path as the command, without paying the start-up
of a new interpreter per case); the kill tests run real ``lstmcore ablate`` subprocesses.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytest.importorskip("optuna")
pytest.importorskip("distributed")
pytest.importorskip("matplotlib")

from lstmcore.ablation.config import ConfigError, StudyConfig  # noqa: E402
from lstmcore.ablation.locks import FlockJournalLock, StudyLock  # noqa: E402
from lstmcore.ablation.storage import JOURNAL_FILE, load_study, trial_rows  # noqa: E402
from lstmcore.ablation.study import Coordinator, deferred_interrupts, run_study  # noqa: E402
from lstmcore.cli import main  # noqa: E402
from test_ablation_run import TINY  # noqa: E402  (the tiny study of the other run tests)

TINY_CLI = ["ablate", "--variants", "peephole,vanilla", "--dataset", "adding", "--dataset-option", "length=6",
            "--dataset-option", "n_train=32", "--dataset-option", "n_valid=16", "--dataset-option", "n_test=16",
            "--trials", "2", "--epochs", "1", "--batch-size", "8", "--param", "hidden_size=4", "--jobs", "1",
            "--threads", "1", "--quiet"]


def _config(**tables):
    return StudyConfig.from_tables(TINY, *[{name: values} for name, values in tables.items()])


def _cli(capsys, *args):
    """Run ``lstmcore ARGS`` in this process: (exit status, stderr)."""
    try:
        status = main(list(args))
    except SystemExit as exc:  # argparse
        status = exc.code
    return status, capsys.readouterr().err


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A complete tiny study (4 trials), copied by the tests that damage it."""
    out = tmp_path_factory.mktemp("finished") / "study"
    assert main([*TINY_CLI, "--out", str(out)]) == 0
    assert len(trial_rows(load_study(out))) == 4
    return out


def _copy(study: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "study"
    shutil.copytree(study, copy)
    return copy


# -- item 17: bad command lines: one line, exit 2, before any trial and before study.json --------------------------
BAD_COMMAND_LINES = {
    "unknown dataset": (["--dataset", "nosuch"], "neither a built-in dataset"),
    "unknown dataset module": (["--dataset", "nosuchpkg.mod:load"], "cannot import 'nosuchpkg.mod'"),
    "dataset function missing": (["--dataset", "lstmcore.datasets:no_such_loader"], "has no function"),
    "negative epochs": (["--epochs", "-1"], "max_epochs must be a positive integer, got -1 (--epochs"),
    "zero epochs": (["--epochs", "0"], "(--epochs"),
    "negative patience": (["--patience", "-2"], "(--patience"),
    "zero batch size": (["--batch-size", "0"], "(--batch-size"),
    "negative time budget": (["--time-budget", "-5"], "(--time-budget"),
    "NaN time budget": (["--time-budget", "nan"], "(--time-budget"),
    "unknown dataset option": (["--dataset-option", "nosuch=3"], "--dataset-option nosuch: not an option"),
    "bad dataset option value": (["--dataset-option", "length=-3"], "cannot be loaded"),
    "zero trials": (["--trials", "0"], "trials (--trials"),
    "zero jobs": (["--jobs", "0"], "--jobs must be a positive integer"),
    "negative jobs": (["--jobs", "-1"], "--jobs must be a positive integer"),
    "zero threads": (["--threads", "0"], "--threads must be a positive integer"),
    "unknown storage": (["--storage", "foo://bar"], "unknown kind of database 'foo'"),
    "storage without scheme": (["--storage", "trials.db"], "not an Optuna RDB URL"),
    "sqlite in a missing folder": (["--storage", "sqlite:////nonexistent/dir/x.db"], "/nonexistent/dir exist"),
    "postgres on a closed port": (["--storage", "postgresql://me:s3cret@127.0.0.1:1/db"], "--storage postgresql://"),
    "unknown variant": (["--variants", "peephole,nosuch"], "unknown variant 'nosuch'"),
    "bad param": (["--param", "learning_rate=oops"], "--param"),
    "bad seed": (["--seed", "-4"], "seed"),
    "too many trials": (["--trials", "99999999999999999999"], "from 1 to 100000"),
    "zero batch size in the space": (["--param", "batch_size=0"], "'batch_size' is a count"),
    "negative learning rate in the space": (["--param", "learning_rate=-1"], "reaches learning_rate = -1"),
    "hidden size too large for memory": (["--param", "hidden_size=1e12"], "cannot be built"),
    "in-memory sqlite": (["--storage", "sqlite://"], "in-memory SQLite"),
    "dataset that is not a loader": (["--dataset", "os:getcwd"], "not an option of dataset 'os:getcwd'"),
    "unreadable config": (["--config", "/nonexistent/study.toml"], "cannot read the study configuration"),
}
BAD_CONFIG_FILES = {
    "variants not names": ("[study]\nvariants = 5", "variants must be"),
    "independent not a boolean": ('[study]\nindependent = "yes"', "independent in [study] must be true or false"),
    "optimizer not a name": ("[training]\noptimizer = 5", "optimizer must be"),
    "NaN learning rate": ("[training]\nlearning_rate = nan", "learning_rate"),
    "zero layers": ("[model]\nnum_layers = 0", "num_layers in [model]"),
    "unknown dtype": ('[model]\ndtype = "float16"', "dtype in [model]"),
    "negative input noise in the space": ('[space.input_noise]\ndistribution = "fixed"\nvalue = -1',
                                          "reaches input_noise = -1"),
    "not TOML": ("garbage = = =", "is not valid TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIG_FILES))
def test_bad_config_file_is_one_line_and_exit_2(case, tmp_path, capsys):
    text, expected = BAD_CONFIG_FILES[case]
    (tmp_path / "study.toml").write_text(text)
    status, stderr = _cli(capsys, "ablate", "--config", str(tmp_path / "study.toml"), "--out", str(tmp_path / "s"))
    line = _one_line(stderr)
    assert status == 2 and expected in line, line
    assert not (tmp_path / "s" / "study.json").exists()


@pytest.mark.parametrize("case", sorted(BAD_COMMAND_LINES))
def test_bad_command_line_is_one_line_and_exit_2_before_anything_is_written(case, tmp_path, capsys):
    extra, expected = BAD_COMMAND_LINES[case]
    out = tmp_path / "study"
    status, stderr = _cli(capsys, *TINY_CLI, *extra, "--out", str(out))
    line = _one_line(stderr)
    assert status == 2 and expected in line, line
    assert "s3cret" not in line  # a password in a URL is never printed
    assert not (out / "study.json").exists() and not (out / JOURNAL_FILE).exists()


def test_postgres_without_its_driver_says_which_extra_to_install(tmp_path, capsys, monkeypatch):
    for driver in ("psycopg", "psycopg2"):
        monkeypatch.setitem(sys.modules, driver, None)  # as if not installed
    status, stderr = _cli(capsys, *TINY_CLI, "--storage", "postgresql://me:s3cret@127.0.0.1:1/db",
                          "--out", str(tmp_path / "s"))
    line = _one_line(stderr)
    assert status == 2 and 'psycopg 3 driver: pip install "lstmcore[postgres]"' in line and "s3cret" not in line


def test_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    status, stderr = _cli(capsys, *TINY_CLI, "--out", str(tmp_path / "afile"))
    assert status == 2 and "is a file" in _one_line(stderr)
    status, stderr = _cli(capsys, "report", str(tmp_path / "afile"))
    assert status == 2 and "is a file" in _one_line(stderr)


@pytest.mark.slow
def test_the_corrected_command_runs_after_a_refused_one(tmp_path, capsys):
    out = tmp_path / "study"
    assert _cli(capsys, *TINY_CLI, "--epochs", "0", "--out", str(out))[0] == 2
    status, _ = _cli(capsys, *TINY_CLI, "--out", str(out))
    assert status == 0 and len(trial_rows(load_study(out))) == 4  # the bad plan was not frozen in study.json


@pytest.mark.slow
def test_unreachable_dask_scheduler(tmp_path, capsys):
    started = time.monotonic()
    status, stderr = _cli(capsys, *TINY_CLI, "--dask", "tcp://no-such-host.invalid:8786", "--out", str(tmp_path / "s"))
    assert status == 2 and "cannot reach the Dask scheduler" in _one_line(stderr)
    assert time.monotonic() - started < 30 and not (tmp_path / "s" / "study.json").exists()


@pytest.mark.slow
def test_report_alpha_and_report_out_are_checked(finished_study, tmp_path, capsys):
    status, stderr = _cli(capsys, "report", str(finished_study), "--alpha", "5", "--out", str(tmp_path / "r"))
    assert status == 2 and "--alpha" in _one_line(stderr)
    (tmp_path / "file").write_text("x")
    status, stderr = _cli(capsys, "report", str(finished_study), "--out", str(tmp_path / "file"))
    assert status == 2 and "cannot write the report" in _one_line(stderr)


# -- item 12: a damaged journal --------------------------------------------------------------------------------------
def _records(study: Path) -> list[bytes]:
    return (study / JOURNAL_FILE).read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("tail", [b'{"op_code": 5, "worker_id": "x", "study_id": 0, "dat', b"\0" * 300,
                                  b"not json at all\n"], ids=["cut-off line", "NUL bytes", "garbage line"])
@pytest.mark.slow
def test_a_torn_last_record_is_set_aside_and_the_study_resumes(finished_study, tmp_path, capsys, tail):
    study = _copy(finished_study, tmp_path)
    intact = (study / JOURNAL_FILE).read_bytes()
    (study / JOURNAL_FILE).write_bytes(intact + tail)
    status, _ = _cli(capsys, "report", str(study))  # a reader ignores the torn record, as Optuna does
    assert status == 0 and (study / JOURNAL_FILE).read_bytes() == intact + tail  # and never changes the file
    status, stderr = _cli(capsys, *TINY_CLI, "--trials", "3", "--out", str(study))
    assert status == 0, stderr
    assert "its last record was incomplete" in stderr and "kept in study.journal.torn-" in stderr
    (kept,) = study.glob("study.journal.torn-*")
    assert kept.read_bytes() == tail  # nothing lost: the torn bytes are kept beside the journal
    assert (study / JOURNAL_FILE).read_bytes().startswith(intact)
    rows = trial_rows(load_study(study))
    assert len(rows) == 6 and all(r["state"] == "COMPLETE" for r in rows)


@pytest.mark.parametrize("damage", ["garbage in the middle", "NUL bytes in the middle", "several garbage lines",
                                    "half of the file", "empty file", "journal missing"])
@pytest.mark.slow
def test_a_damaged_journal_is_refused_in_one_line_and_left_as_it_is(finished_study, tmp_path, capsys, damage):
    study = _copy(finished_study, tmp_path)
    lines = _records(study)
    middle = len(lines) // 2
    journal = study / JOURNAL_FILE
    if damage == "garbage in the middle":
        journal.write_bytes(b"".join(lines[:middle] + [b"#!garbage\n"] + lines[middle:]))
    elif damage == "NUL bytes in the middle":
        journal.write_bytes(b"".join(lines[:middle] + [b"\0" * 64 + b"\n"] + lines[middle:]))
    elif damage == "several garbage lines":
        journal.write_bytes(b"".join(lines) + b"one\ntwo\nthree\n")
    elif damage == "half of the file":
        journal.write_bytes(b"".join(lines[:middle]))
    elif damage == "empty file":
        journal.write_bytes(b"")
    else:
        journal.unlink()
    before = journal.read_bytes() if journal.exists() else None
    for command in (["report", str(study)], [*TINY_CLI, "--out", str(study)]):
        status, stderr = _cli(capsys, *command)
        line = _one_line(stderr)
        assert status == 2, line
        assert str(journal) in line and ("restore" in line.lower()), line
        assert (journal.read_bytes() if journal.exists() else None) == before  # never made worse
    assert not list(study.glob("study.journal.torn-*"))


@pytest.mark.slow
def test_a_damaged_study_file_is_refused_naming_it(finished_study, tmp_path, capsys):
    study = _copy(finished_study, tmp_path)
    (study / "study.json").write_text('{"config": {"variants": ')
    for command in (["report", str(study)], [*TINY_CLI, "--out", str(study)]):
        status, stderr = _cli(capsys, *command)
        assert status == 2 and "study.json is damaged" in _one_line(stderr)


# -- item 10: an interrupt between claiming a trial and recording the claim ------------------------------------------
def test_an_interrupt_waits_until_the_claim_is_recorded(tmp_path):
    config = _config()
    from lstmcore.ablation.storage import open_storage

    coordinator = Coordinator(config, tmp_path).open(open_storage(tmp_path))
    coordinator.enqueue_missing()
    ask = coordinator.study.ask

    def ask_then_interrupt(*args, **kwargs):
        trial = ask(*args, **kwargs)  # the trial is RUNNING in the storage now
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C at the worst moment
        time.sleep(0.05)
        return trial

    coordinator.study.ask = ask_then_interrupt
    with pytest.raises(KeyboardInterrupt):
        coordinator.claim()
    (trial,) = coordinator.claimed.values()
    assert trial.user_attrs["owner"]["run_id"] == coordinator.run_id  # recorded before the interrupt acted
    assert coordinator.interrupt_claimed() == 1
    with deferred_interrupts():
        pass  # no interrupt pending: nothing raised


@pytest.mark.slow
def test_a_claim_left_without_an_owner_by_a_dead_run_is_rerun_at_once(tmp_path):
    """A coordinator that died right after ``ask`` leaves a RUNNING trial without an owner and a fresh heartbeat;
    the next run must not wait for the heartbeat to go stale (it used to, 5 minutes, and skip the trial)."""
    out = tmp_path / "study"
    code = textwrap.dedent(f"""
        import os, sys
        from lstmcore.ablation.config import StudyConfig
        from lstmcore.ablation.storage import open_storage
        from lstmcore.ablation.study import Coordinator
        config = StudyConfig.from_tables({TINY!r})
        coordinator = Coordinator(config, {str(out)!r}).open(open_storage({str(out)!r}))
        coordinator.enqueue_missing()
        coordinator.study.ask()      # claimed, and the process dies before recording the claim
        os._exit(0)
    """)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)
    running = [t for t in load_study(out).get_trials() if t.state.name == "RUNNING"]
    assert len(running) == 1 and "owner" not in running[0].user_attrs
    summary = run_study(_config(), out, jobs=1, blas_threads=1, quiet=True)
    assert summary.completed == summary.planned == 4
    states = [(t.state.name, t.user_attrs.get("status")) for t in load_study(out).get_trials()]
    assert ("FAIL", "interrupted") in states and not [s for s in states if s[0] in ("RUNNING", "WAITING")]


SLOW_CLI = ["ablate", "--variants", "peephole,vanilla,nfg", "--dataset", "adding", "--dataset-option", "length=20",
            "--dataset-option", "n_train=200", "--dataset-option", "n_valid=50", "--dataset-option", "n_test=50",
            "--trials", "3", "--epochs", "3", "--batch-size", "4", "--param", "hidden_size=8", "--jobs", "2",
            "--threads", "1", "--quiet"]


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.0, 0.3, 0.8, 1.5])
def test_ctrl_c_then_the_same_command_completes_the_study(tmp_path, delay):
    """The issue's reproduction: Ctrl-C just after one of the first progress lines, then the same command."""
    out = tmp_path / "study"
    process = subprocess.Popen([sys.executable, "-m", "lstmcore", *SLOW_CLI, "--out", str(out)], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if line.startswith("["):  # the first finished trial's progress line
            break
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=60)
    resumed = subprocess.run([sys.executable, "-m", "lstmcore", *SLOW_CLI, "--out", str(out)], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "9 of 9 planned trials complete" in resumed.stdout, resumed.stdout


# -- item 13: workers exit when their coordinator is killed ------------------------------------------------------------
def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to find the worker processes")
def test_workers_exit_when_the_coordinator_is_sigkilled(tmp_path):
    out = tmp_path / "study"
    process = subprocess.Popen([sys.executable, "-m", "lstmcore", *SLOW_CLI, "--out", str(out)], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    for line in process.stderr:
        if line.startswith("lstmcore ablate:") and "trials to run" in line:
            break
    deadline = time.monotonic() + 30
    workers = []
    while time.monotonic() < deadline and len(workers) < 2:
        time.sleep(0.2)
        workers = [p for p in _children(process.pid)
                   if "spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]
    assert len(workers) == 2, "the two worker processes never started"
    process.kill()  # SIGKILL of the coordinator alone, not of its process group
    process.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in workers):
        time.sleep(0.1)
    left = [p for p in workers if _alive(p)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "worker processes outlived their coordinator"


# -- item 14: a lock left by a kill during a journal write -------------------------------------------------------------
def test_a_journal_lock_held_by_a_killed_process_is_free_at_once(tmp_path):
    journal = tmp_path / JOURNAL_FILE
    journal.write_bytes(b"")
    code = (f"from lstmcore.ablation.locks import FlockJournalLock; import os, signal; "
            f"FlockJournalLock({str(journal)!r}).acquire(); os.kill(os.getpid(), signal.SIGKILL)")
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path)
    started = time.monotonic()
    lock = FlockJournalLock(str(journal))
    assert lock.acquire() and time.monotonic() - started < 1.0
    lock.release()


@pytest.mark.slow
def test_a_stale_optuna_lock_file_does_not_delay_a_run(finished_study, tmp_path):
    study = _copy(finished_study, tmp_path)
    os.symlink(study / JOURNAL_FILE, study / (JOURNAL_FILE + ".lock"))  # what a kill inside Optuna's lock leaves
    started = time.monotonic()
    assert main([*TINY_CLI, "--trials", "3", "--out", str(study)]) == 0
    assert time.monotonic() - started < 25  # Optuna's symlink lock waited 30 s
    assert len(trial_rows(load_study(study))) == 6


# -- item 15: two coordinators on one directory ------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_ablate_on_the_same_out_is_refused_naming_the_first(finished_study, tmp_path, capsys):
    study = _copy(finished_study, tmp_path)
    before = (study / JOURNAL_FILE).read_bytes()
    with StudyLock(study):  # as a running ablate holds it
        status, stderr = _cli(capsys, *TINY_CLI, "--trials", "3", "--out", str(study))
        line = _one_line(stderr)
        assert status == 2 and "in use by another lstmcore ablate" in line and f"pid {os.getpid()}" in line
        assert _cli(capsys, "report", str(study))[0] == 0  # reading is fine meanwhile
    assert (study / JOURNAL_FILE).read_bytes() == before
    assert _cli(capsys, *TINY_CLI, "--trials", "3", "--out", str(study))[0] == 0  # free again afterwards


# -- item 11: several studies in one database --------------------------------------------------------------------------
@pytest.mark.slow
def test_studies_sharing_a_database_keep_apart(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = run_study(_config(), tmp_path / "a", jobs=1, blas_threads=1, quiet=True, storage=url)
    second = run_study(_config(study={"seed": 4, "trials": 1}), tmp_path / "b", jobs=1, blas_threads=1, quiet=True,
                       storage=url)
    assert (first.completed, first.planned) == (4, 4) and (second.completed, second.planned) == (2, 2)
    names = {json.loads((tmp_path / d / "study.json").read_text())["config"]["name"] for d in "ab"}
    assert len(names) == 2  # each its own name in the database
    assert len(trial_rows(load_study(tmp_path / "b"))) == 2  # b's report sees b's trials only
    named = {"study": {"name": "shared-name"}}
    run_study(_config(**named), tmp_path / "c", jobs=1, blas_threads=1, quiet=True, storage=url)
    with pytest.raises(ConfigError, match="already holds a study named 'shared-name' with another plan"):
        run_study(_config(**{**named, "training": {"max_epochs": 3}}), tmp_path / "d", jobs=1, quiet=True,
                  storage=url)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    info = json.loads((tmp_path / "a" / "study.json").read_text())
    info["storage"] = other
    (tmp_path / "a" / "study.json").write_text(json.dumps(info))
    with pytest.raises(ConfigError, match="no study named 'lstmcore-.*' in the storage sqlite:///.*other.db"):
        run_study(_config(), tmp_path / "a", jobs=1, quiet=True, storage=other)


# -- item 16: a variant that changed since the study ran it ------------------------------------------------------------
PLUGIN = """
import lstmcore

@lstmcore.hookimpl
def register_variants(register):
    register(lstmcore.GatedCell("idcell", peepholes={peepholes}, description="test cell"))
"""


def _install(site: Path, version: str, peepholes: bool) -> None:
    for old in site.glob("lstmcore_test_idcell-*.dist-info"):
        shutil.rmtree(old)
    (site / "lstmcore_test_idcell_mod.py").write_text(PLUGIN.format(peepholes=peepholes))
    info = site / f"lstmcore_test_idcell-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: lstmcore-test-idcell\nVersion: {version}\n")
    (info / "entry_points.txt").write_text("[lstmcore]\nidcell = lstmcore_test_idcell_mod\n")
    sys.modules.pop("lstmcore_test_idcell_mod", None)
    from lstmcore.plugins import registry

    registry.reload()


@pytest.mark.slow
def test_a_changed_variant_is_refused_unless_accepted(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    from lstmcore.plugins import registry

    try:
        _install(site, "1.0", peepholes=False)
        config = _config(study={"variants": "idcell", "trials": 1})
        assert run_study(config, tmp_path / "s", jobs=1, blas_threads=1, quiet=True).completed == 1
        recorded = json.loads((tmp_path / "s" / "study.json").read_text())["variants"]["idcell"]
        assert recorded["source"] == "lstmcore-test-idcell 1.0" and "p" not in recorded["parameter_shapes"]
        _install(site, "1.1", peepholes=True)  # reinstalled with another spec: more parameters
        with pytest.raises(ConfigError, match=r"variant 'idcell' changed since this study ran it \(source "
                                              r"lstmcore-test-idcell 1.0 -> lstmcore-test-idcell 1.1"):
            run_study(StudyConfig.from_tables(TINY, {"study": {"variants": "idcell", "trials": 2}}), tmp_path / "s",
                      jobs=1, quiet=True)
        grown = run_study(StudyConfig.from_tables(TINY, {"study": {"variants": "idcell", "trials": 2}}),
                          tmp_path / "s", jobs=1, blas_threads=1, quiet=True, accept_variant_changes=True)
        assert grown.ran == 1
        info = json.loads((tmp_path / "s" / "study.json").read_text())
        assert info["variants"]["idcell"]["source"] == "lstmcore-test-idcell 1.1"
        assert info["variant_changes"][0]["variant"] == "idcell" and "1.0 -> " in info["variant_changes"][0]["change"]
    finally:
        monkeypatch.undo()
        sys.modules.pop("lstmcore_test_idcell_mod", None)
        registry.reload()
