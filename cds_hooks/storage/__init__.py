"""Persistence: feedback and suppression (SQLite, embedded)."""
