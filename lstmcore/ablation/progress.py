"""Progress of a running study: a live block on a terminal (trials done per variant, best so far, ETA), log lines
otherwise (``--quiet``, or output that is not a terminal)."""
from __future__ import annotations

import sys
import time

from lstmcore._progress import LiveBlock, bar, duration


class Progress:
    """Counts per variant; ``live=True`` redraws a block of lines in place."""

    def __init__(self, variants, trials_per_variant: int, rows, metric_direction: str = "minimize",
                 live: bool | None = None, stream=None, concurrency: int = 1):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.variants = list(variants)
        self.total = {v: trials_per_variant for v in self.variants}
        self.done = {v: 0 for v in self.variants}
        self.failed = {v: 0 for v in self.variants}
        self.best: dict[str, tuple[float, float | None]] = {}
        self.sign = 1.0 if metric_direction == "minimize" else -1.0
        self.concurrency = max(1, concurrency)
        self.running = 0
        self.metric = None
        self.started = time.monotonic()
        self.finished_here = 0
        self._block = LiveBlock(self.stream)
        for row in rows:
            if row["state"] in ("COMPLETE", "FAIL") and row["variant"] in self.done:
                self._count(row)

    def _count(self, row) -> None:
        variant = row["variant"]
        if row["state"] == "COMPLETE":
            self.done[variant] += 1
            self.metric = row.get("metric") or self.metric
            valid, test = row.get("valid"), row.get("test")
            best = self.best.get(variant)
            if valid is not None and (best is None or self.sign * valid < self.sign * best[0]):
                self.best[variant] = (valid, test)
        elif row.get("status") not in ("interrupted", "worker-lost"):
            self.done[variant] += 1
            self.failed[variant] += 1

    # -- events -------------------------------------------------------------------------------------------------------
    def start(self, description: str) -> None:
        remaining = sum(self.total.values()) - sum(self.done.values())
        if not self.live:
            print(f"lstmcore ablate: {remaining} trials to run on {description}", file=self.stream, flush=True)
        self.draw()

    def trial_started(self, key: str) -> None:
        self.running += 1
        self.draw()

    def trial_finished(self, row: dict) -> None:
        self.running -= 1
        self.finished_here += 1
        self._count(row)
        if not self.live:
            value = (f"valid {row['valid']:.4g} test {row['test']:.4g}" if row["state"] == "COMPLETE"
                     else f"FAILED ({row.get('status')}: {row.get('reason')})")
            print(f"[{sum(self.done.values())}/{sum(self.total.values())}] {row['key']}: {value} "
                  f"in {duration(row.get('wall_time'))}; ETA {duration(self.eta())}", file=self.stream, flush=True)
        self.draw()

    def eta(self) -> float | None:
        if not self.finished_here:
            return None
        remaining = sum(self.total.values()) - sum(self.done.values())
        rate = self.finished_here / (time.monotonic() - self.started)
        return remaining / rate if rate > 0 else None

    # -- drawing ------------------------------------------------------------------------------------------------------
    def lines(self) -> list[str]:
        done, total = sum(self.done.values()), sum(self.total.values())
        head = (f"{bar(done, total, 30)} {done}/{total} trials, {self.running} running, "
                f"elapsed {duration(time.monotonic() - self.started)}, ETA {duration(self.eta())}")
        lines = [head]
        metric = self.metric or "metric"
        for variant in self.variants:
            best = self.best.get(variant)
            best_text = (f"best valid {metric} {best[0]:.4g} (test {best[1]:.4g})" if best and best[1] is not None
                         else "best -")
            failed = f", {self.failed[variant]} failed" if self.failed[variant] else ""
            lines.append(f"  {variant:<12} {self.done[variant]:>4}/{self.total[variant]:<4} {best_text}{failed}")
        return lines

    def draw(self) -> None:
        if self.live:
            self._block.draw(self.lines())

    def close(self) -> None:
        self.draw()
