"""The shared ``jti`` memory (checklist X7): a client JWT is accepted once across every worker, host and
restart, because the memory is the service's database (SQLite on one host, PostgreSQL for several).

It fits :class:`cds_hooks.auth.replay.ReplayStore`. One atomic statement decides: insert the token's key, or,
when the key is there but its token has expired, take it over; a key that is there and still valid is a
replay. Expired rows are purged now and then by whoever writes.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import sqlalchemy as sa

from cds_hooks.storage.database import Database
from cds_hooks.storage.schema import replay_jti

PURGE_EVERY = 500  # calls between purges of expired rows (per process)


def token_key(iss: str, jti: str) -> str:
    """A fixed-size key: neither the issuer nor the jti is kept as such."""
    return hashlib.sha256(f"{iss}\0{jti}".encode()).hexdigest()


class DatabaseReplayStore:
    def __init__(self, database: Database, *, clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self._clock = clock
        self._calls = 0
        if database.dialect == "postgresql":  # each dialect's INSERT … ON CONFLICT, imported only when used
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        self._insert = insert

    def seen(self, iss: str, jti: str, exp: float) -> bool:
        now = self._clock()
        stmt = self._insert(replay_jti).values(token_key=token_key(iss, jti), expires_at=exp)
        stmt = stmt.on_conflict_do_update(
            index_elements=[replay_jti.c.token_key],
            set_={"expires_at": stmt.excluded.expires_at},
            where=replay_jti.c.expires_at <= now,  # only an expired entry may be taken over
        ).returning(replay_jti.c.token_key)  # a row back = written; none = a valid entry was there
        with self.database.engine.begin() as conn:
            written = conn.execute(stmt).first() is not None
            self._calls += 1
            if self._calls % PURGE_EVERY == 0:
                conn.execute(replay_jti.delete().where(replay_jti.c.expires_at <= now))
        return not written

    def __len__(self) -> int:
        """Entries still valid (for tests and operators)."""
        query = sa.select(sa.func.count()).select_from(replay_jti).where(replay_jti.c.expires_at > self._clock())
        with self.database.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
