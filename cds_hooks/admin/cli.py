"""``cramp-cds feedback-report``: the feedback report from the store, as HTML (charts) or CSV.

Reads ``CRAMP_DATABASE`` (or ``--database``); needs no secret key and changes nothing in the store.
Exit status: 0 written, 2 usage or a store that cannot be read.
"""
from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

HELP = "the feedback report: cards issued, accepted and overridden per contributor and week (HTML or CSV)"


def _day(value: str) -> datetime:
    try:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date such as 2026-11-01: {value!r}") from None


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database", help="the store's URL or SQLite file (default: CRAMP_DATABASE, or "
                        "<CRAMP_DATA_DIR>/cramp.db)")
    parser.add_argument("--since", type=_day, help="cards issued on or after this date")
    parser.add_argument("--until", type=_day, help="cards issued before this date (default: now)")
    parser.add_argument("--format", choices=("html", "csv"), help="default: from the --out suffix, else html")
    parser.add_argument("--out", type=Path, help="file to write (default: stdout)")


def run(args: argparse.Namespace) -> int:
    import sqlalchemy as sa

    from cds_hooks.admin.report import to_csv, to_html
    from cds_hooks.settings import database_from_env
    from cds_hooks.storage.analytics import summarise
    from cds_hooks.storage.database import Database, DatabaseError

    url = args.database or database_from_env()
    try:
        database = Database(url)
        if database.revision() is None:
            print(f"cramp-cds feedback-report: no feedback store at {database.describe()}", file=sys.stderr)
            return 2
        summary = summarise(database, since=args.since, until=args.until)
    except (DatabaseError, sa.exc.SQLAlchemyError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
        print(f"cramp-cds feedback-report: cannot read the store: {reason}", file=sys.stderr)
        return 2
    fmt = args.format or ("csv" if args.out and args.out.suffix.lower() == ".csv" else "html")
    text = to_csv(summary) if fmt == "csv" else to_html(summary)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0
