"""One hook call, start to finish: validate → resolve prefetch → review → card → suppression → record.

Kept free of Flask so the pipeline reads top to bottom; the view only parses JSON and returns the result.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import plugin
from cds_hooks.observability import metrics
from cds_hooks.service.conformance import card_problems
from cds_hooks.service.errors import InternalError, PreconditionFailed
from cds_hooks.service.links import LinkPolicy
from cds_hooks.service.prefetch import PrefetchPolicy, lacking, resolve_prefetch, resources_of
from cds_hooks.service.services import OPTIONAL_KEYS, SUPPLEMENTARY_LABELS, Service
from cds_hooks.service.validation import parse_hook_request
from cds_hooks.settings import Settings
from cds_hooks.storage.feedback import FeedbackStore, patient_key

log = logging.getLogger("cramp_cds.hooks")


@dataclass(frozen=True)
class HookRuntime:
    settings: Settings
    store: FeedbackStore
    knowledge: Any

    @property
    def policy(self) -> PrefetchPolicy:
        s = self.settings
        return PrefetchPolicy(s.fhir_connect_timeout, s.fhir_read_timeout, s.fhir_budget_seconds,
                              s.fhir_max_pages, s.max_prefetch_resources, s.fhir_max_response_bytes)

    @property
    def links(self) -> LinkPolicy:
        return LinkPolicy(self.settings.link_hosts, self.settings.evidence_page)


def new_uuid() -> str:
    return str(uuid.uuid4())


def handle_hook(runtime: HookRuntime, service: Service, body: Any, *, now: datetime | None = None) -> dict:
    """The CDS Hooks response for one call: ``{"cards": [...]}`` with at most one card (R1)."""
    now = now or datetime.now(UTC)
    settings = runtime.settings
    request = parse_hook_request(body, service.hook)
    try:
        slots = resolve_prefetch(request, service.prefetch, runtime.policy, now, OPTIONAL_KEYS)
    except PreconditionFailed as exc:
        count_unavailable(exc)
        raise
    fetched = [s.key for s in slots if s.strategy.value in ("fetch", "complete")]
    if fetched:
        log.info("prefetch completed from fhirServer for keys: %s", ", ".join(fetched))
        for key in fetched:
            metrics.PREFETCH_FALLBACKS.labels(key).inc()

    rv = plugin.review(resources_of(slots), now=now, hook=service.hook, context=request.context,
                       options=settings.review_options, knowledge=runtime.knowledge)
    if rv.warnings:
        log.info("review reported %d input warning(s)", len(rv.warnings))
    card = plugin.build_card(rv, hook=service.hook, trigger=settings.trigger_policy,
                             knowledge=runtime.knowledge, new_uuid=new_uuid)
    if card is None:
        return {"cards": []}

    patient = patient_key(settings.secret_key, request.fhir_server, request.patient_id)
    card_key = suppression_key(card, rv, service.hook, settings.secret_key)
    if card_key and runtime.store.is_suppressed(patient, card_key, now):
        log.info("card %r suppressed by an earlier override for this patient", card.key)
        metrics.SUPPRESSIONS.labels(metrics.card_kind(card.key)).inc()
        return {"cards": []}
    say_what_was_lacking(card.body, lacking(slots))
    runtime.links.apply(card.body)
    problems = card_problems(card.body)
    if problems:
        log.error("the engine built a card that breaks CDS Hooks: %s", "; ".join(problems[:10]))
        raise InternalError("internal error: the card could not be built")
    card_uuid = card.body.get("uuid")
    if isinstance(card_uuid, str):
        runtime.store.record_issued(card_uuid=card_uuid, service_id=service.id, patient=patient,
                                    card_key=card_key or f"unidentified:{card_uuid}", issued_at=now,
                                    indicator=card.body.get("indicator"), contributors=card.contributors)
    return {"cards": [card.body]}


def count_unavailable(exc: PreconditionFailed) -> None:
    """One count per prefetch key a 412 names (its issues' ``expression`` is ``prefetch.<key>``)."""
    for issue in exc.issues:
        expression = issue.expression or ""
        if expression.startswith("prefetch."):
            metrics.PREFETCH_UNAVAILABLE.labels(expression.removeprefix("prefetch.")).inc()


_FHIR_REFERENCE = re.compile(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}")


def suppression_key(card: plugin.Card, review: plugin.Review, hook: str, secret: bytes) -> str | None:
    """What an override of this card silences (docs/api.md, "Suppression").

    The contributors card: the same set of contributors for the patient. The quinine warning: only the
    quinine orders or active course it named (an opaque HMAC of their references, no record ids stored), so a
    new quinine order always warns again. A quinine warning that names no identifiable order is never
    suppressed (None).
    """
    if card.key != "quinine":
        return card.key
    ordering = hook in ("order-select", "order-sign")  # there the warning is about the draft orders only
    refs = sorted({ref for f in review.findings if f.contributor == "quinine" and (f.ordered or not ordering)
                   for ref in f.references if _FHIR_REFERENCE.fullmatch(ref)})
    if not refs:
        return None
    return "quinine:" + hmac.new(secret, "|".join(refs).encode(), hashlib.sha256).hexdigest()[:32]


def say_what_was_lacking(card: dict, keys: list[str]) -> None:
    """One separate closing sentence (and a machine-readable list) naming the supplementary data not reviewed."""
    if not keys:
        return
    labels = " and ".join(SUPPLEMENTARY_LABELS.get(k, k) for k in keys)
    card["detail"] += (f"\n\nNot reviewed: {labels} (neither the EHR's prefetch nor its FHIR server "
                       "provided them); contributors recorded only there are not shown.")
    review = (card.get("extension") or {}).get("org.cramp-cds.review")
    if isinstance(review, dict):
        review["notReviewed"] = list(keys)
