"""The feedback store (checklist F2/F3) on the shared database (:mod:`cds_hooks.storage.database`).

It never keeps raw patient identifiers: a patient is the opaque key
``HMAC-SHA256(secret, fhirServer + "|" + patientId)``. Issued cards are recorded (card uuid → service,
patient key, card key, what the card said, time) so that feedback, which only carries the card uuid, can be
tied back to a patient and a card key for suppression, and counted per contributor for the feedback report.
Free-text override comments are not stored (they may hold PHI); only whether one was given.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from cds_hooks.service.validation import FeedbackEntry
from cds_hooks.storage.database import Database
from cds_hooks.storage.schema import feedback, issued_card


def iso(moment: datetime) -> str:
    """UTC, fixed width, so that text comparison is time comparison."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def patient_key(secret: bytes, fhir_server: str | None, patient_id: str) -> str:
    message = f"{fhir_server or ''}|{patient_id}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


class FeedbackStore:
    def __init__(self, database: Database | str | Path, *, suppression_days: int,
                 suppression_reasons: Iterable[str], reason_system: str) -> None:
        self.database = database if isinstance(database, Database) else Database(str(database))
        self.suppression_days = suppression_days
        self.suppression_reasons = tuple(suppression_reasons)
        self.reason_system = reason_system

    @property
    def engine(self) -> sa.Engine:
        return self.database.engine

    def create(self) -> None:
        """Create or upgrade the tables (idempotent; every worker may call it)."""
        self.database.migrate()

    def close(self) -> None:
        self.database.close()

    def record_issued(self, *, card_uuid: str, service_id: str, patient: str, card_key: str,
                      issued_at: datetime, indicator: str | None = None,
                      contributors: Iterable[str] = ()) -> None:
        values = {"service_id": service_id, "patient_key": patient, "card_key": card_key,
                  "issued_at": iso(issued_at), "indicator": indicator,
                  "contributors": ",".join(contributors) or None}
        with self.engine.begin() as conn:
            # A card uuid is new for every card; a client resending one must not fail the call.
            updated = conn.execute(issued_card.update().where(issued_card.c.card_uuid == card_uuid)
                                   .values(**values)).rowcount
            if not updated:
                conn.execute(issued_card.insert().values(card_uuid=card_uuid, **values))

    def add_feedback(self, service_id: str, entries: list[FeedbackEntry], received_at: datetime) -> None:
        """Store every entry in one transaction (all or none)."""
        rows = [
            {"service_id": service_id, "card_uuid": e.card, "outcome": e.outcome,
             "accepted_suggestions": json.dumps(list(e.accepted_suggestions)) if e.accepted_suggestions else None,
             "reason_system": e.reason_system, "reason_code": e.reason_code, "has_comment": int(e.has_comment),
             "outcome_timestamp": iso(e.outcome_timestamp), "received_at": iso(received_at)}
            for e in entries
        ]
        if not rows:  # an empty feedback list is valid and stores nothing
            return
        with self.engine.begin() as conn:
            conn.execute(feedback.insert(), rows)

    def is_suppressed(self, patient: str, card_key: str, now: datetime) -> bool:
        """True when this patient's card with this key was overridden with a suppressing reason, recently.

        "Recently" is by the time the feedback was received (the server's clock, not the client's).
        """
        if self.suppression_days <= 0 or not self.suppression_reasons:
            return False
        since = iso(now - timedelta(days=self.suppression_days))
        query = (
            sa.select(sa.literal(1))
            .select_from(feedback.join(issued_card, issued_card.c.card_uuid == feedback.c.card_uuid))
            .where(issued_card.c.patient_key == patient, issued_card.c.card_key == card_key,
                   feedback.c.outcome == "overridden", feedback.c.reason_system == self.reason_system,
                   feedback.c.reason_code.in_(self.suppression_reasons), feedback.c.received_at >= since)
            .limit(1)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def feedback_rows(self) -> list[dict]:
        """Every stored feedback row (for tests and operators)."""
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(feedback).order_by(feedback.c.id))]

    def issued_rows(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(issued_card).order_by(issued_card.c.issued_at))]
