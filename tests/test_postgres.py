"""Studies on a real PostgreSQL server that the test starts itself (initdb + pg_ctl in a temporary folder, as an
unprivileged user when run as root), including a SIGKILL mid-study and the resume (issue 9, item 18).

Skipped cleanly where there is no PostgreSQL server binary or no psycopg 3 (``pip install "lstmcore[postgres]"``).
"""
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # starts a PostgreSQL server

pytest.importorskip("optuna")
pytest.importorskip("psycopg", reason="PostgreSQL storage needs psycopg 3: pip install \"lstmcore[postgres]\"")

from lstmcore.ablation.config import ConfigError, StudyConfig  # noqa: E402
from lstmcore.ablation.storage import load_study, trial_rows  # noqa: E402
from lstmcore.ablation.study import run_study  # noqa: E402
from test_ablation_run import SLOW_TRIALS, TINY  # noqa: E402

PASSWORD = "lstmcore-test-pw"


def _server_binaries() -> Path | None:
    """The folder of initdb, pg_ctl and postgres: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).resolve().parent)):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server on 127.0.0.1 with password authentication: its URL, without a database name."""
    binaries = _server_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL server binary (initdb, pg_ctl) on this machine")
    root = tempfile.mkdtemp(prefix="lstmcore-pg-")  # not under pytest's folder, which only root may enter
    data, pwfile = Path(root) / "data", Path(root) / "pw"
    pwfile.write_text(PASSWORD + "\n")
    run_as = {}
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: run it as nobody
        import pwd

        nobody = pwd.getpwnam("nobody")
        os.chmod(root, 0o755)
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        os.chown(pwfile, nobody.pw_uid, nobody.pw_gid)
        run_as = {"user": nobody.pw_uid, "group": nobody.pw_gid}
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run([str(binaries / "initdb"), "-D", str(data), "-U", "lstmcore", "--auth=scram-sha-256",
                    f"--pwfile={pwfile}", "-E", "UTF8"], check=True, capture_output=True, env=env, cwd=root,
                   **run_as)
    subprocess.run([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(Path(root) / "log"), "-w", "-t", "60",
                    "-o", f"-p {port} -c listen_addresses=127.0.0.1 -k {root}", "start"], check=True,
                   capture_output=True, env=env, cwd=root, **run_as)
    try:
        yield f"postgresql://lstmcore:{PASSWORD}@127.0.0.1:{port}"
    finally:
        subprocess.run([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, env=env, cwd=root, **run_as)
        shutil.rmtree(root, ignore_errors=True)


def _database(server: str, name: str) -> str:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


def _cli(*args, cwd, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "lstmcore", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_two_studies_in_one_database_keep_apart(postgres, tmp_path):
    url = _database(postgres, "two_studies")
    first = run_study(StudyConfig.from_tables(TINY), tmp_path / "a", jobs=1, blas_threads=1, quiet=True,
                      storage=url)
    second = run_study(StudyConfig.from_tables(TINY, {"study": {"seed": 9, "trials": 1}}), tmp_path / "b", jobs=1,
                       blas_threads=1, quiet=True, storage=url)
    assert (first.completed, first.planned) == (4, 4) and (second.completed, second.planned) == (2, 2)
    assert len(trial_rows(load_study(tmp_path / "a"))) == 4 and len(trial_rows(load_study(tmp_path / "b"))) == 2
    with pytest.raises(ConfigError, match="another plan"):
        named = {"study": {"name": load_study(tmp_path / "a").study_name, "seed": 10}}
        run_study(StudyConfig.from_tables(TINY, named), tmp_path / "c", jobs=1, quiet=True, storage=url)


def test_sigkill_mid_study_on_postgres_then_resume(postgres, tmp_path):
    url = _database(postgres, "kill_and_resume")
    out = tmp_path / "study"
    process = _cli(*SLOW_TRIALS, "--out", str(out), "--storage", url, cwd=tmp_path, start_new_session=True)
    before = killed_key = None
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        try:
            trials = load_study(out).get_trials()
        except Exception:  # study.json not written yet
            continue
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        running = [t for t in trials if t.state.name == "RUNNING" and "owner" in t.user_attrs]
        if len(complete) >= 2 and running:
            os.killpg(process.pid, signal.SIGKILL)  # coordinator and worker, mid-trial
            process.wait()
            before = {t.user_attrs["key"]: (t.number, t.value) for t in load_study(out).get_trials()
                      if t.state.name == "COMPLETE"}
            killed_key = running[0].user_attrs["key"]
            break
    assert before is not None, f"never 2 complete trials and one running: {process.communicate()}"
    resumed = _cli(*SLOW_TRIALS, "--out", str(out), "--storage", url, cwd=tmp_path)
    stdout, stderr = resumed.communicate(timeout=180)
    assert resumed.returncode == 0, stderr
    assert "8 of 8 planned trials complete" in stdout
    trials = load_study(out).get_trials()
    complete = {t.user_attrs["key"]: (t.number, t.value) for t in trials if t.state.name == "COMPLETE"}
    assert len(complete) == 8 and len([t for t in trials if t.state.name == "COMPLETE"]) == 8  # none duplicated
    assert all(complete[key] == value for key, value in before.items())  # none lost or changed
    assert ("FAIL", "interrupted") in {(t.state.name, t.user_attrs.get("status")) for t in trials
                                       if t.user_attrs.get("key") == killed_key}


@pytest.mark.parametrize("problem", ["wrong password", "closed port", "unknown host", "missing database"])
def test_postgres_connection_problems_are_one_line(postgres, tmp_path, problem):
    host_port = postgres.rsplit("@", 1)[1]
    url = {"wrong password": f"postgresql://lstmcore:not-it@{host_port}/postgres",
           "closed port": f"postgresql://lstmcore:{PASSWORD}@127.0.0.1:{_free_port()}/postgres",
           "unknown host": f"postgresql://lstmcore:{PASSWORD}@no-such-host.invalid/postgres",
           "missing database": f"{postgres}/no_such_database"}[problem]
    done = subprocess.run([sys.executable, "-m", "lstmcore", *SLOW_TRIALS, "--out", str(tmp_path / "s"),
                           "--storage", url], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "cannot open the database" in lines[0], done.stderr
    assert PASSWORD not in lines[0] and "not-it" not in lines[0]
    assert not (tmp_path / "s" / "study.json").exists()
