"""The one progress renderer, for training (``fit(progress=True)``) and studies (``lstmcore ablate``): a block of lines
redrawn in place on a terminal, and the pieces of text both draw (a bar, a duration)."""
from __future__ import annotations

import math
import sys
import time


def bar(done: int, total: int, width: int) -> str:
    """``[####......]``: ``done`` of ``total`` as ``width`` characters (full when ``total`` is 0)."""
    filled = min(width, int(width * done / total)) if total else width
    return f"[{'#' * filled}{'.' * (width - filled)}]"


def duration(seconds: float | None) -> str:
    """``m:ss`` or ``h:mm:ss``; ``--:--`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:d}:{rest % 60:02d}"


class LiveBlock:
    """Lines redrawn in place on ``stream`` (stderr by default): each draw moves the cursor back up over the lines of
    the previous one (ANSI ``ESC[nF``) and rewrites every line (``ESC[2K``), so what was drawn last stays on screen.
    Draws closer together than ``min_interval`` seconds are skipped unless forced."""

    def __init__(self, stream=None, min_interval: float = 0.0):
        self.stream = stream if stream is not None else sys.stderr
        self.min_interval = min_interval
        self._lines_drawn = 0
        self._last = -math.inf

    def draw(self, lines: list[str], force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        if self._lines_drawn:
            self.stream.write(f"\x1b[{self._lines_drawn}F")
        for line in lines:
            self.stream.write("\x1b[2K" + line + "\n")
        self.stream.flush()
        self._lines_drawn = len(lines)


class ProgressBar:
    """One line, ``prefix [####....] done/total suffix``, redrawn at most ten times a second (``fit``'s epochs)."""

    def __init__(self, total: int, prefix: str, stream=None, width: int = 24):
        self.total, self.prefix, self.width = max(total, 1), prefix, width
        self._block = LiveBlock(stream, min_interval=0.1)

    def update(self, done: int, suffix: str = "", force: bool = False) -> None:
        self._block.draw([f"{self.prefix} {bar(done, self.total, self.width)} {done}/{self.total} {suffix}"], force)

    def close(self, suffix: str = "") -> None:
        """The full bar, left on its line."""
        self.update(self.total, suffix, force=True)
