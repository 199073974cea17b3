"""The feedback report's numbers, from the store: cards issued, accepted and overridden (by reason), per
contributor and per ISO week of issue. Only counts leave this module: never a patient key or card uuid.

A card is counted once per contributor it listed (a card listing a thiazide and a statin counts for both), and
once per outcome however many feedback entries it received. Cards stored before revision 0002 did not record
their contributors; they are read from the card key (``contributors:a,b`` or ``quinine``).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import sqlalchemy as sa

from cds_hooks.storage.database import Database
from cds_hooks.storage.schema import feedback, issued_card


@dataclass
class Tally:
    issued: int = 0
    accepted: int = 0
    overridden: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # override reason code → cards

    @property
    def answered(self) -> int:
        return self.accepted + self.overridden

    def rate(self, count: int) -> float | None:
        return count / self.issued if self.issued else None


@dataclass
class FeedbackSummary:
    since: datetime | None
    until: datetime
    total: Tally
    by_contributor: dict[str, Tally]
    by_week: dict[str, Tally]
    by_week_contributor: dict[tuple[str, str], Tally]

    @property
    def reasons(self) -> list[str]:
        return sorted(self.total.reasons)


def iso_week(day: str) -> str:
    year, week, _ = date.fromisoformat(day).isocalendar()
    return f"{year}-W{week:02d}"


def _contributors(listed: str | None, card_key: str) -> list[str]:
    if listed:
        return listed.split(",")
    kind, _, ids = card_key.partition(":")
    return ids.split(",") if kind == "contributors" and ids else [kind]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def summarise(database: Database, *, since: datetime | None = None, until: datetime | None = None) -> FeedbackSummary:
    until = until or datetime.now(UTC)
    day = sa.func.substr(issued_card.c.issued_at, 1, 10).label("day")
    window = [issued_card.c.issued_at < _iso(until)]
    if since is not None:
        window.append(issued_card.c.issued_at >= _iso(since))
    issued_q = (sa.select(day, issued_card.c.contributors, issued_card.c.card_key, sa.func.count().label("n"))
                .where(*window).group_by(day, issued_card.c.contributors, issued_card.c.card_key))
    answered_q = (
        sa.select(day, issued_card.c.contributors, issued_card.c.card_key, feedback.c.outcome, feedback.c.reason_code,
                  sa.func.count(sa.distinct(feedback.c.card_uuid)).label("n"))
        .select_from(feedback.join(issued_card, issued_card.c.card_uuid == feedback.c.card_uuid))
        .where(*window)
        .group_by(day, issued_card.c.contributors, issued_card.c.card_key, feedback.c.outcome, feedback.c.reason_code)
    )
    total = Tally()
    by_contributor: dict[str, Tally] = defaultdict(Tally)
    by_week: dict[str, Tally] = defaultdict(Tally)
    by_week_contributor: dict[tuple[str, str], Tally] = defaultdict(Tally)
    with database.engine.connect() as conn:
        issued_rows = conn.execute(issued_q).all()
        answered_rows = conn.execute(answered_q).all()
    for row in issued_rows:
        week = iso_week(row.day)
        total.issued += row.n
        by_week[week].issued += row.n
        for contributor in _contributors(row.contributors, row.card_key):
            by_contributor[contributor].issued += row.n
            by_week_contributor[(week, contributor)].issued += row.n
    for row in answered_rows:
        week = iso_week(row.day)
        tallies = [total, by_week[week]] + [
            t for c in _contributors(row.contributors, row.card_key)
            for t in (by_contributor[c], by_week_contributor[(week, c)])]
        for tally in tallies:
            if row.outcome == "accepted":
                tally.accepted += row.n
            elif row.outcome == "overridden":
                tally.overridden += row.n
                reason = row.reason_code or "(none given)"
                tally.reasons[reason] = tally.reasons.get(reason, 0) + row.n
    return FeedbackSummary(since=since, until=until, total=total,
                           by_contributor=dict(sorted(by_contributor.items(), key=lambda kv: -kv[1].issued)),
                           by_week=dict(sorted(by_week.items())),
                           by_week_contributor=dict(sorted(by_week_contributor.items())))
