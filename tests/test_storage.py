"""The store on both databases it supports: an SQLite file and a real PostgreSQL server (started by the
fixture in tests/service_fixtures/postgres.py; required in CI). Migrations, feedback, suppression and the
shared jti replay memory (checklist F2, F3, X7)."""
from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from cds_hooks.service.validation import FeedbackEntry
from cds_hooks.settings import OVERRIDE_REASON_SYSTEM
from cds_hooks.storage.database import HEAD_REVISION, Database
from cds_hooks.storage.feedback import FeedbackStore
from cds_hooks.storage.replay import DatabaseReplayStore, token_key
from cds_hooks.storage.schema import metadata
from tests.service_fixtures.postgres import started_server

NOW = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def database(database_url):
    db = Database(database_url)
    db.migrate()
    yield db
    db.close()


def store_on(database, days=30) -> FeedbackStore:
    return FeedbackStore(database, suppression_days=days, suppression_reasons=("already-addressed",),
                         reason_system=OVERRIDE_REASON_SYSTEM)


def override(card: str, reason: str = "already-addressed") -> FeedbackEntry:
    return FeedbackEntry(card, "overridden", NOW, reason_system=OVERRIDE_REASON_SYSTEM, reason_code=reason)


# --- migrations -----------------------------------------------------------------------------------------------

def test_migrations_build_exactly_the_schema_the_code_uses_and_are_idempotent(database):
    assert database.revision() == database.head_revision() == HEAD_REVISION
    database.migrate()  # a second worker starting: nothing to do, no error
    with database.engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diffs == []


def _reflected(engine: sa.Engine) -> dict:
    """Every table as the database describes it: columns, primary key, indexes; and the revision stamped."""
    inspector = sa.inspect(engine)
    tables = {
        name: ([(c["name"], str(c["type"]), c["nullable"], c.get("default")) for c in inspector.get_columns(name)],
               inspector.get_pk_constraint(name)["constrained_columns"],
               sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in inspector.get_indexes(name)))
        for name in inspector.get_table_names()
    }
    with engine.connect() as conn:
        return {"tables": tables, "revision": conn.execute(sa.text("SELECT version_num FROM alembic_version")).all()}


def test_a_new_database_is_created_at_head_as_the_migrations_would_build_it(database):
    """A new database gets schema.py's tables and the head stamp without Alembic (start-up); the result is the
    same, table by table, as running every migration on an empty database."""
    created = _reflected(database.engine)
    with database.engine.begin() as conn:
        metadata.drop_all(conn)
        conn.execute(sa.text("DROP TABLE alembic_version"))
    with database.engine.connect() as conn:
        command.upgrade(database._alembic_config(conn), "head")
        conn.commit()
    assert created == _reflected(database.engine)
    assert created["revision"] == [(HEAD_REVISION,)]


def test_a_database_from_version_0_1_0_is_upgraded_in_place_keeping_its_rows(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:  # the 0.1.0 schema, created without Alembic
        conn.executescript("""
            CREATE TABLE issued_card (card_uuid TEXT PRIMARY KEY, service_id TEXT NOT NULL,
                patient_key TEXT NOT NULL, card_key TEXT NOT NULL, issued_at TEXT NOT NULL);
            CREATE INDEX issued_card_patient ON issued_card (patient_key, card_key);
            CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT, service_id TEXT NOT NULL,
                card_uuid TEXT NOT NULL, outcome TEXT NOT NULL, accepted_suggestions TEXT, reason_system TEXT,
                reason_code TEXT, has_comment INTEGER NOT NULL DEFAULT 0, outcome_timestamp TEXT NOT NULL,
                received_at TEXT NOT NULL);
            CREATE INDEX feedback_card ON feedback (card_uuid);
            INSERT INTO issued_card VALUES ('c1', 'svc', 'pk', 'quinine', '2026-10-30T08:00:00.000000Z');
            INSERT INTO feedback (service_id, card_uuid, outcome, reason_system, reason_code, outcome_timestamp,
                received_at) VALUES ('svc', 'c1', 'overridden', 'https://cramp-cds.org/fhir/CodeSystem/override-reason',
                'already-addressed', '2026-10-30T09:00:00.000000Z', '2026-10-30T09:00:00.000000Z');
        """)
    db = Database(str(path))
    db.migrate()
    assert db.revision() == db.head_revision()
    store = store_on(db)
    assert store.is_suppressed("pk", "quinine", NOW), "the old override still suppresses"
    assert [r["contributors"] for r in store.issued_rows()] == [None]
    assert len(DatabaseReplayStore(db)) == 0
    db.close()


# --- feedback and suppression (F2, F3) ------------------------------------------------------------------------

def test_issued_cards_and_feedback_round_trip(database):
    store = store_on(database)
    store.record_issued(card_uuid="c1", service_id="svc", patient="pk1", card_key="contributors:laba,statin",
                        issued_at=NOW, indicator="info", contributors=("laba", "statin"))
    store.add_feedback("svc", [override("c1"), FeedbackEntry("c1", "accepted", NOW, accepted_suggestions=("s1",))],
                       NOW)
    [issued] = store.issued_rows()
    assert (issued["indicator"], issued["contributors"]) == ("info", "laba,statin")
    rows = store.feedback_rows()
    assert [r["outcome"] for r in rows] == ["overridden", "accepted"]
    assert rows[1]["accepted_suggestions"] == '["s1"]' and rows[0]["reason_code"] == "already-addressed"


def test_a_batch_of_feedback_is_stored_all_or_none(database):
    store = store_on(database)
    bad = FeedbackEntry("c2", None, NOW)  # outcome is NOT NULL: the database refuses the second row
    with pytest.raises(sa.exc.IntegrityError):
        store.add_feedback("svc", [override("c1"), bad], NOW)
    assert store.feedback_rows() == []


def test_suppression_by_patient_card_key_reason_and_window(database):
    store = store_on(database, days=30)
    store.record_issued(card_uuid="c1", service_id="svc", patient="pk1", card_key="quinine", issued_at=NOW)
    store.record_issued(card_uuid="c2", service_id="svc", patient="pk2", card_key="quinine", issued_at=NOW)
    store.add_feedback("svc", [override("c1")], NOW)
    store.add_feedback("svc", [override("c2", "not-relevant")], NOW)
    assert store.is_suppressed("pk1", "quinine", NOW + timedelta(days=29))
    assert not store.is_suppressed("pk1", "quinine", NOW + timedelta(days=31)), "the window ends"
    assert not store.is_suppressed("pk1", "contributors:laba", NOW), "another card"
    assert not store.is_suppressed("pk2", "quinine", NOW), "a reason that does not suppress"


# --- the shared jti replay memory (X7) ------------------------------------------------------------------------

def test_x7_a_jti_is_accepted_once_until_it_expires(database):
    clock = [1000.0]
    store = DatabaseReplayStore(database, clock=lambda: clock[0])
    assert store.seen("https://ehr", "j1", 1100.0) is False
    assert store.seen("https://ehr", "j1", 1100.0) is True
    assert store.seen("https://other-ehr", "j1", 1100.0) is False, "jti is per issuer"
    clock[0] = 1100.0
    assert store.seen("https://ehr", "j1", 1200.0) is False, "an expired entry may be taken over"
    assert store.seen("https://ehr", "j1", 1200.0) is True


def test_x7_replay_memory_survives_a_restart(database_url):
    first = Database(database_url)
    first.migrate()
    assert DatabaseReplayStore(first).seen("https://ehr", "restart-jti", 4e9) is False
    first.close()
    again = Database(database_url)  # a new process: nothing kept in memory
    assert DatabaseReplayStore(again).seen("https://ehr", "restart-jti", 4e9) is True
    again.close()


def test_x7_concurrent_replays_exactly_one_wins(database):
    store = DatabaseReplayStore(database)
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def attempt() -> None:
        barrier.wait()
        results.append(store.seen("https://ehr", "race", 4e9))

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] + [True] * 7


def test_x7_neither_issuer_nor_jti_is_stored_in_the_clear(database):
    DatabaseReplayStore(database).seen("https://ehr.example", "jti-visible-value", 4e9)
    with database.engine.connect() as conn:
        keys = [r[0] for r in conn.execute(sa.text("SELECT token_key FROM replay_jti"))]
    assert keys == [token_key("https://ehr.example", "jti-visible-value")] and "jti" not in keys[0]


# --- readiness ------------------------------------------------------------------------------------------------

def test_a_reachable_database_is_writable(database):
    assert database.check_writable() is None
    assert len(DatabaseReplayStore(database)) == 0, "the probe leaves nothing behind"


def test_a_stopped_postgresql_is_reported_not_writable():
    server = started_server()
    try:
        db = Database(server.new_database())
        db.migrate()
        assert db.check_writable() is None
        server.stop()
        problem = db.check_writable()
        assert problem, "a stopped server is not writable"
        db.close()
    finally:
        server.remove()
