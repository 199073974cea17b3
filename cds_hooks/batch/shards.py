"""Per-patient data on disk, by shard, so that the parent's memory does not grow with the number of patients.

Bulk files are split by resource type: a patient's record is complete only once every file is read. Instead of
holding every partial record until then, the parent appends each chunk's partial records, tagged with the
chunk's index (their order key), and the finished results of Bundles and searches, to one of `SHARDS` files
chosen by a stable hash of the patient reference (`zlib.crc32`). Afterwards the shards are read back one at a
time: each patient's parts (per export) go to `steps.review_patient`, which merges them in order and reviews,
and the sorted rows of the shard are written to a file that the report reads back as one sorted stream
(`PatientRows`).
"""
from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from cds_hooks.batch.model import PatientResult, read_pickles
from cds_hooks.batch.steps import Part
from plugin.record import PatientRecord

SHARDS = 64
_PROTOCOL = pickle.HIGHEST_PROTOCOL


def shard_of(ref: str | None, shards: int = SHARDS) -> int:
    """The shard of a patient reference: stable across runs and processes (unlike `hash`)."""
    return zlib.crc32((ref or "").encode()) % shards


def pack_records(export: str, order: int, records: dict[str, PatientRecord],
                 shards: int | None = None) -> dict[int, bytes]:
    """A task's partial records, pickled by shard: the worker does this, the parent only appends bytes."""
    shards = shards or SHARDS
    groups: dict[int, list[tuple[str, PatientRecord]]] = {}
    for ref, rec in records.items():
        groups.setdefault(shard_of(ref, shards), []).append((ref, rec))
    return {k: pickle.dumps((export, order, items), _PROTOCOL) for k, items in groups.items()}


class Spill:
    """Append-only shard files of partial records `(export, order, [(ref, record), …])` and results
    `(None, None, [result, …])`."""

    def __init__(self, folder: Path, shards: int | None = None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.shards = folder, shards or SHARDS
        self._out: list[BinaryIO | None] = [None] * self.shards

    def _path(self, k: int) -> Path:
        return self.folder / f"spill-{k:03d}.pickle"

    def _file(self, k: int) -> BinaryIO:
        fh = self._out[k]
        if fh is None:
            fh = self._out[k] = open(self._path(k), "ab")  # noqa: SIM115 - closed by close()
        return fh

    def add_records(self, export: str, order: int, records: dict[str, PatientRecord]) -> None:
        """Partial records as they are (in-process run): pickled straight into each shard's file."""
        groups: dict[int, list[tuple[str, PatientRecord]]] = {}
        for ref, rec in records.items():
            groups.setdefault(shard_of(ref, self.shards), []).append((ref, rec))
        for k, items in groups.items():
            pickle.dump((export, order, items), self._file(k), _PROTOCOL)

    def add_packed(self, packed: dict[int, bytes]) -> None:
        """Partial records already pickled by shard (`pack_records`, in a worker)."""
        for k, data in packed.items():
            self._file(k).write(data)

    def add_results(self, results: Iterable[PatientResult]) -> None:
        groups: dict[int, list[PatientResult]] = {}
        for p in results:
            groups.setdefault(shard_of(p.patient, self.shards), []).append(p)
        for k, items in groups.items():
            pickle.dump((None, None, items), self._file(k), _PROTOCOL)

    def flush(self) -> None:
        """Before forking workers: a child must never inherit (and maybe write out) buffered data."""
        for fh in self._out:
            if fh is not None:
                fh.flush()

    def close(self) -> None:
        for k, fh in enumerate(self._out):
            if fh is not None:
                fh.close()
                self._out[k] = None

    def shards_read_back(self) -> Iterator[tuple[int, list[PatientResult], dict[tuple[str, str], list[Part]]]]:
        """Each shard once, then its file is deleted: (shard, finished results in arrival order, and per
        (export, patient) the partial records with their order keys, for `steps.review_patient`)."""
        self.close()
        for k in range(self.shards):
            path = self._path(k)
            if not path.exists():
                continue
            results: list[PatientResult] = []
            parts: dict[tuple[str, str], list[Part]] = {}
            for export, order, items in read_pickles(path):
                if export is None:
                    results.extend(items)
                    continue
                for ref, rec in items:
                    parts.setdefault((export, ref), []).append(((order,), rec))
            path.unlink()
            yield k, results, parts
