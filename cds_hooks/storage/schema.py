"""The store's tables (SQLAlchemy Core), the same on SQLite and PostgreSQL.

Times are fixed-width ISO-8601 UTC text (``2026-11-01T08:00:00.000000Z``) so that text order is time order on
both databases; the replay table keeps epoch seconds because it is compared with a JWT's ``exp``. The schema
is created and upgraded only by the Alembic migrations in ``migrations/``; this module is what the code reads
and writes against, and a test checks the two agree.
"""
from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

# One row per card the service returned: feedback carries only the card uuid, this ties it to a patient key
# (an HMAC, never the id), a card key (for suppression) and what the card said (for the analytics report).
issued_card = Table(
    "issued_card", metadata,
    Column("card_uuid", String(64), primary_key=True),
    Column("service_id", String(100), nullable=False),
    Column("patient_key", String(64), nullable=False),
    Column("card_key", Text, nullable=False),
    Column("issued_at", String(32), nullable=False),
    Column("indicator", String(16)),       # info / warning (null on rows from before revision 0002)
    Column("contributors", Text),          # the contributor ids the card listed, comma-separated
    Index("issued_card_patient", "patient_key", "card_key"),
    Index("issued_card_issued_at", "issued_at"),
)

feedback = Table(
    "feedback", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("service_id", String(100), nullable=False),
    Column("card_uuid", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("accepted_suggestions", Text),
    Column("reason_system", Text),
    Column("reason_code", String(100)),
    Column("has_comment", Integer, nullable=False, server_default="0"),
    Column("outcome_timestamp", String(32), nullable=False),
    Column("received_at", String(32), nullable=False),
    Index("feedback_card", "card_uuid"),
)

# Client JWT ids already accepted (checklist X7), shared by every worker and host: the key is
# SHA-256(iss NUL jti) so neither value is kept, ``expires_at`` is when the token can no longer be accepted.
replay_jti = Table(
    "replay_jti", metadata,
    Column("token_key", String(64), primary_key=True),
    Column("expires_at", Float, nullable=False),
    Index("replay_jti_expires_at", "expires_at"),
)
