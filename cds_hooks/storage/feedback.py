"""The feedback store (checklist F2/F3): SQLite, WAL mode, one short connection per operation so several
gunicorn workers (and threads) can share one database file on one host.

It never keeps raw patient identifiers: a patient is the opaque key
``HMAC-SHA256(secret, fhirServer + "|" + patientId)``. Issued cards are recorded (card uuid → service,
patient key, card key, time) so that feedback, which only carries the card uuid, can be tied back to a
patient and a card key for suppression. Free-text override comments are not stored (they may hold PHI);
only whether one was given.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cds_hooks.service.validation import FeedbackEntry

SCHEMA = """
CREATE TABLE IF NOT EXISTS issued_card (
    card_uuid    TEXT PRIMARY KEY,
    service_id   TEXT NOT NULL,
    patient_key  TEXT NOT NULL,
    card_key     TEXT NOT NULL,
    issued_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS issued_card_patient ON issued_card (patient_key, card_key);
CREATE TABLE IF NOT EXISTS feedback (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id           TEXT NOT NULL,
    card_uuid            TEXT NOT NULL,
    outcome              TEXT NOT NULL,
    accepted_suggestions TEXT,
    reason_system        TEXT,
    reason_code          TEXT,
    has_comment          INTEGER NOT NULL DEFAULT 0,
    outcome_timestamp    TEXT NOT NULL,
    received_at          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_card ON feedback (card_uuid);
"""


def _iso(moment: datetime) -> str:
    """UTC, fixed width, so that text comparison is time comparison."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def patient_key(secret: bytes, fhir_server: str | None, patient_id: str) -> str:
    message = f"{fhir_server or ''}|{patient_id}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


class FeedbackStore:
    def __init__(self, path: Path | str, *, suppression_days: int, suppression_reasons: Iterable[str],
                 reason_system: str) -> None:
        self.path = Path(path)
        self.suppression_days = suppression_days
        self.suppression_reasons = tuple(suppression_reasons)
        self.reason_system = reason_system
        self._local = threading.local()

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, opened once (a hook call should not pay for opening and closing SQLite).

        Re-opened in a forked worker: a connection must never cross a fork. ``synchronous=NORMAL`` in WAL mode
        survives an application crash; a power cut may lose the last few rows (issued cards, feedback).
        """
        local = self._local
        if getattr(local, "conn", None) is None or local.pid != os.getpid():
            conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA synchronous = NORMAL")
            local.conn, local.pid = conn, os.getpid()
        conn = local.conn
        conn.row_factory = None
        yield conn

    def close(self) -> None:
        """Close this thread's connection (tests and shutdown)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def create(self) -> None:
        """Create the folder, the tables and switch to WAL (idempotent; every worker may call it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.executescript(SCHEMA)

    def record_issued(self, *, card_uuid: str, service_id: str, patient: str, card_key: str,
                      issued_at: datetime) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO issued_card (card_uuid, service_id, patient_key, card_key, issued_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (card_uuid, service_id, patient, card_key, _iso(issued_at)),
            )

    def add_feedback(self, service_id: str, entries: list[FeedbackEntry], received_at: datetime) -> None:
        """Store every entry in one transaction (all or none)."""
        rows = [
            (service_id, e.card, e.outcome, json.dumps(list(e.accepted_suggestions)) if e.accepted_suggestions
             else None, e.reason_system, e.reason_code, int(e.has_comment), _iso(e.outcome_timestamp),
             _iso(received_at))
            for e in entries
        ]
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO feedback (service_id, card_uuid, outcome, accepted_suggestions, reason_system, "
                    "reason_code, has_comment, outcome_timestamp, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def is_suppressed(self, patient: str, card_key: str, now: datetime) -> bool:
        """True when this patient's card with this key was overridden with a suppressing reason, recently.

        "Recently" is by the time the feedback was received (the server's clock, not the client's).
        """
        if self.suppression_days <= 0 or not self.suppression_reasons:
            return False
        since = _iso(now - timedelta(days=self.suppression_days))
        marks = ",".join("?" * len(self.suppression_reasons))
        with self._connect() as conn:
            row = conn.execute(
                "SELECT 1 FROM feedback f JOIN issued_card c ON c.card_uuid = f.card_uuid "
                "WHERE c.patient_key = ? AND c.card_key = ? AND f.outcome = 'overridden' "
                f"AND f.reason_system = ? AND f.reason_code IN ({marks}) AND f.received_at >= ? LIMIT 1",
                (patient, card_key, self.reason_system, *self.suppression_reasons, since),
            ).fetchone()
        return row is not None

    def feedback_rows(self) -> list[dict]:
        """Every stored feedback row (for tests and operators)."""
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM feedback ORDER BY id")]

    def issued_rows(self) -> list[dict]:
        with self._connect() as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM issued_card ORDER BY issued_at")]
