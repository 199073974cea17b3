"""Batch reports: `summary` (shared counts and rows), `html` (the page for people), `writer` (JSON, CSV,
the format dispatch and atomic output)."""
