"""`--since-report FILE`: what is new on the worklist since an earlier JSON report of the same panel."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import orjson

NEW, CHANGED = "new", "changed"


class PreviousReportError(Exception):
    """The --since-report file cannot be used; the message says why."""


@dataclass(frozen=True)
class PreviousReport:
    label: str                                   # the file, as named on the command line
    as_of: str | None
    worklist: dict[str, frozenset[str]]          # patient reference -> contributor ids it was listed with

    def change(self, patient: str, contributors: list[str]) -> str | None:
        """NEW: not on the earlier worklist; CHANGED: a contributor was added since; None: as before."""
        before = self.worklist.get(patient)
        if before is None:
            return NEW
        return CHANGED if set(contributors) - before else None

    def dropped(self, now_listed: set[str]) -> int:
        """Patients on the earlier worklist who are not on this one."""
        return len(self.worklist.keys() - now_listed)


def read_previous(path: str) -> PreviousReport:
    """An earlier `--format json` report; PreviousReportError names what is wrong with it."""
    try:
        doc = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise PreviousReportError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    except orjson.JSONDecodeError:
        raise PreviousReportError(f"{path} is not JSON: give an earlier report written with --format json") from None
    patients = doc.get("patients") if isinstance(doc, dict) else None
    if not isinstance(patients, list):
        raise PreviousReportError(f"{path} is not a cramp-cds JSON report (no \"patients\" list)")
    worklist: dict[str, frozenset[str]] = {}
    for p in patients:
        if not isinstance(p, dict) or not isinstance(p.get("patient"), str):
            continue
        on_list = p.get("rank") is not None if "rank" in p else bool(p.get("findings"))  # older reports: no rank
        if on_list:
            ids = frozenset(f.get("contributor") for f in p.get("findings") or () if isinstance(f, dict))
            worklist[p["patient"]] = worklist.get(p["patient"], frozenset()) | ids
    as_of = doc.get("asOf") if isinstance(doc.get("asOf"), str) else None
    return PreviousReport(path, as_of, worklist)
