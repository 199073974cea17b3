"""Persistence on one database (SQLite embedded by default, PostgreSQL by URL): feedback and suppression,
the shared ``jti`` replay memory, and the feedback report's queries.

| module | job |
|---|---|
| `database` | the engine from a URL, Alembic migrations at start (under a lock), the readiness probe |
| `schema` | the tables (SQLAlchemy Core) |
| `migrations/` | Alembic revisions (`0001` = the 0.1.0 schema, kept as is on old databases) |
| `feedback` | issued cards and feedback, HMAC patient keys, suppression |
| `replay` | `DatabaseReplayStore`: the `jti` memory shared by workers, hosts and restarts |
| `analytics` | cards issued, accepted and overridden per contributor and week (no patient keys) |
"""
