"""Progress on stderr: a tqdm bar on a terminal (bytes read, rate, ETA, patients, resources); otherwise quiet
until one machine-readable JSON summary line at the end. `--quiet` silences both (errors still print)."""
from __future__ import annotations

import json
import sys
from typing import TextIO

from tqdm import tqdm

from cds_hooks.batch.model import BatchResult


class Progress:
    def __init__(self, *, bar: bool = False, summary: bool = False, stream: TextIO | None = None) -> None:
        self.bar_enabled, self.summary_enabled = bar, summary
        self.stream = stream or sys.stderr
        self._bar: tqdm | None = None
        self.resources = 0
        self.patients = 0

    @classmethod
    def for_terminal(cls, *, quiet: bool, stream: TextIO | None = None) -> Progress:
        stream = stream or sys.stderr
        tty = bool(getattr(stream, "isatty", lambda: False)())
        return cls(bar=tty and not quiet, summary=not quiet, stream=stream)

    def start(self, total_bytes: int) -> None:
        if self.bar_enabled and self._bar is None:
            tqdm.monitor_interval = 0   # no monitor thread: worker processes may be forked after this
            self._bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024, file=self.stream,
                             desc="review", dynamic_ncols=True, smoothing=0.1)

    def advance(self, nbytes: int, *, resources: int = 0, patients: int | None = None) -> None:
        self.resources += resources
        if patients is not None:
            self.patients = patients
        if self._bar is not None:
            self._bar.set_postfix(patients=self.patients, resources=self.resources, refresh=False)
            self._bar.update(nbytes)

    def note(self, text: str) -> None:
        """A step people may want to see (export polling, downloads): shown on a terminal only."""
        if self.bar_enabled:
            tqdm.write(text, file=self.stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def finish(self, result: BatchResult, seconds: float) -> None:
        self.close()
        summary = {"patients": len(result.reviewed), "resources": result.stats.resources,
                   "bad_records": len(result.bad_records), "seconds": round(seconds, 3)}
        if self.bar_enabled:
            print(f"reviewed {summary['patients']} patients ({summary['resources']} resources) in "
                  f"{seconds:.1f} s; {summary['bad_records']} bad records", file=self.stream)
        elif self.summary_enabled:
            print(json.dumps(summary), file=self.stream)
