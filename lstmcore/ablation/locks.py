"""Who owns a study: process identity, the study directory's lock and the journal file's write lock.

- A process is named by (host, pid, start time): a pid alone can be reused after its process died. On Linux the start
  time comes from ``/proc/PID/stat``; elsewhere only the pid is checked.
- ``StudyLock``: one ``lstmcore ablate`` per study directory, an ``fcntl`` lock on ``DIR/study.lock``. The kernel
  releases it when its process dies, however it dies, so a killed study never leaves a stale lock; the file keeps the
  owner's pid, host and start so that the refusal can name it.
- ``FlockJournalLock``: the journal's write lock, also an ``fcntl`` lock (Optuna's default lock is a symlink, which a
  kill during a write leaves behind, and which the next writer waits 30 s for before forcing it).
"""
from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no kernel locks; see StudyLock
    fcntl = None

LOCK_FILE = "study.lock"


def process_token(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, Linux), or ``None`` when unknown."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (OSError, ValueError):
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 (starttime), counted after the parenthesised name


def this_process() -> dict:
    """The identity of the running process: ``{"host", "pid", "started"}``."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": process_token(os.getpid())}


def process_alive(owner: dict) -> bool | None:
    """Whether the process ``owner`` (as ``this_process`` gives) runs: ``None`` for another host (unknown here)."""
    if owner.get("host") != socket.gethostname():
        return None
    try:
        pid = int(owner.get("pid", -1))
    except (TypeError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    started = owner.get("started")
    current = process_token(pid)
    return started is None or current is None or started == current  # a reused pid is another process


class StudyBusy(RuntimeError):
    """Another process holds the study directory's lock."""


class StudyLock:
    """An exclusive, non-blocking lock on ``DIR/study.lock`` for as long as the ``with`` block runs."""

    def __init__(self, out_dir):
        self.path = Path(out_dir) / LOCK_FILE
        self._handle = None

    def __enter__(self) -> "StudyLock":
        if fcntl is None:  # no kernel lock on this platform: two coordinators are not prevented here
            return self
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            text = handle.read()
            handle.close()
            raise StudyBusy(self._busy_message(text)) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({**this_process(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._handle = handle
        return self

    def _busy_message(self, text: str) -> str:
        try:
            owner = json.loads(text)
            who = f"pid {owner['pid']} on {owner['host']}, since {owner['since']}"
        except (ValueError, KeyError, TypeError):
            who = "another process"
        return (f"{self.path.parent} is in use by another lstmcore ablate ({who}); wait for it to finish or stop "
                f"it, or use another --out")

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.close()  # closing releases the lock; the file stays (removing it would race a newcomer)
            self._handle = None


class FlockJournalLock:
    """The journal's write lock for Optuna's ``JournalFileBackend(lock_obj=...)`` (its ``acquire``/``release``
    interface): a blocking ``fcntl`` lock on ``JOURNAL.flock``, released by the kernel if its holder dies."""

    def __init__(self, journal_path: str):
        self.path = str(journal_path) + ".flock"
        self._handle = None

    def acquire(self) -> bool:
        handle = open(self.path, "a")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        self._handle = handle
        return True

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def journal_lock(journal_path: str) -> FlockJournalLock | None:
    """The journal's write lock (``None`` without ``fcntl``: Optuna's default lock then)."""
    return FlockJournalLock(journal_path) if fcntl is not None else None
