"""The store's one database: an SQLAlchemy engine from a URL, migrations at start, and a readiness probe.

SQLite (a file, the embedded default) suits one host: WAL mode lets several workers share it. PostgreSQL
(``postgresql://user@host/db``) suits several hosts. The URL is ``CRAMP_DATABASE``; everything that differs
between the two stays in this module.
"""
from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

log = logging.getLogger("cramp_cds.storage")

MIGRATIONS = "cds_hooks.storage:migrations"
# The newest revision in migrations/versions (a test checks it): bump it with every new migration.
HEAD_REVISION = "0002"
# Any constant: the PostgreSQL advisory lock that lets one starting worker migrate while the others wait.
MIGRATION_LOCK_ID = 0x6372616D70
# Alembic's record of the revision, declared as Alembic creates it, to stamp a new database (see migrate()).
ALEMBIC_VERSION = sa.Table("alembic_version", sa.MetaData(),
                           sa.Column("version_num", sa.String(32), nullable=False),
                           sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"))


class DatabaseError(RuntimeError):
    """The database cannot be used (its message names the problem, never a password)."""


def normalise_url(value: str) -> str:
    """``sqlite:///path``, a plain file path, or ``postgresql[+psycopg]://…`` → an SQLAlchemy URL."""
    if "://" not in value:
        return f"sqlite:///{value}"
    scheme = value.split("://", 1)[0]
    if scheme in ("postgresql", "postgres"):  # psycopg 3 is the driver we install
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    return value


def sqlite_path(url: str) -> Path | None:
    """The file an SQLite URL names, or None for another database."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    return Path(parsed.database) if parsed.database else None


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    # WAL lets readers and one writer work at once across processes; NORMAL survives an application crash
    # (a power cut may lose the last rows); wait for a busy writer rather than fail.
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA busy_timeout = 10000")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


class Database:
    """An engine plus what the service needs around it. Create one per process (workers fork before it)."""

    def __init__(self, url: str) -> None:
        self.url = normalise_url(url)
        self.path = sqlite_path(self.url)
        if self.path is not None:
            if str(self.path) in ("", ":memory:"):
                raise DatabaseError("an in-memory SQLite database is not shared by workers; give a file path")
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = sa.create_engine(self.url, connect_args={"timeout": 10})
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            # pre-ping: a database restart (failover) costs one reconnect, not one failed call per pooled connection
            self.engine = sa.create_engine(self.url, pool_pre_ping=True, pool_size=5, max_overflow=5)
        # A pooled connection must never cross a fork (gunicorn --preload): the child starts with its own pool.
        os.register_at_fork(after_in_child=lambda: self.engine.dispose(close=False))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def describe(self) -> str:
        """The URL without its password, for logs."""
        return self.engine.url.render_as_string(hide_password=True)

    def close(self) -> None:
        self.engine.dispose()

    # --- schema ---------------------------------------------------------------------------------------------

    def _alembic_config(self, connection: sa.Connection | None):
        from alembic.config import (
            Config,  # Alembic only when migrating: it is a tenth of the start-up imports
        )

        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        config.attributes["connection"] = connection
        return config

    @contextmanager
    def _migration_lock(self, connection: sa.Connection) -> Iterator[None]:
        """One migrator at a time: workers (and hosts) that start together wait for the first."""
        if self.dialect == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(sa.text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
                connection.commit()
        elif self.path is not None:
            with open(f"{self.path}.migrate-lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)
        else:
            yield

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent; every worker may call it at start).

        Alembic (a tenth of start-up) is loaded only to upgrade an existing database. A database already at
        :data:`HEAD_REVISION` is left as it is; a new, empty one gets the tables of :mod:`.schema` and is
        stamped at the head revision (Alembic's recipe for a new database; a test checks the tables equal what
        the migrations build).
        """
        if self._stored_revision() == HEAD_REVISION:
            return
        from cds_hooks.storage.schema import metadata

        try:
            with self.engine.connect() as connection, self._migration_lock(connection):
                tables = set(sa.inspect(connection).get_table_names())
                if not tables & {*metadata.tables, ALEMBIC_VERSION.name}:
                    metadata.create_all(connection)
                    ALEMBIC_VERSION.create(connection)
                    connection.execute(ALEMBIC_VERSION.insert().values(version_num=HEAD_REVISION))
                elif self._stored_revision() != HEAD_REVISION:  # not migrated by a worker we waited for
                    from alembic import command

                    command.upgrade(self._alembic_config(connection), "head")
                connection.commit()
        except sa.exc.SQLAlchemyError as exc:
            raise DatabaseError(f"cannot prepare the database {self.describe()}: {_short(exc)}") from None

    def _stored_revision(self) -> str | None:
        try:
            with self.engine.connect() as connection:
                return connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        except sa.exc.SQLAlchemyError:  # no table yet (a new or a 0.1.0 database): Alembic decides
            return None

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self._alembic_config(None)).get_current_head()

    # --- readiness --------------------------------------------------------------------------------------------

    def check_writable(self) -> str | None:
        """None when the database answers and accepts a write (rolled back), else why not (for /readyz)."""
        from cds_hooks.storage.schema import replay_jti

        try:
            with self.engine.connect() as connection, connection.begin() as transaction:
                connection.execute(replay_jti.insert().values(token_key="readiness-probe", expires_at=0.0))
                transaction.rollback()
        except sa.exc.SQLAlchemyError as exc:
            return _short(exc)
        return None


def _short(exc: BaseException) -> str:
    """The driver's first line, without SQL text or parameters."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return (text[0] if text else type(orig).__name__)[:300]
