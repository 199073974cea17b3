"""The service's Prometheus metrics (prometheus_client) and their text exposition.

Module-level metrics, as prometheus_client intends: any part of the service counts with one line and no
plumbing. Several gunicorn workers are summed by prometheus_client's multiprocess mode: when
``PROMETHEUS_MULTIPROC_DIR`` is set (by :mod:`cds_hooks.observability.gunicorn_hooks` before the workers
start) every worker writes its values to files there and :func:`exposition` reads them all.

Labels are bounded sets (service ids, statuses, prefetch keys, contributor ids from the knowledge, outcome and
reason codes): never a patient, a path with ids in it, or a client-supplied free text.
"""
from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Hook answers should be well under a second (EHRs expect ~500 ms); the tail buckets show the FHIR fallback.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)

REQUESTS = Counter("cramp_http_requests", "HTTP requests answered, by endpoint, CDS service and status",
                   ["endpoint", "service", "status"])
REQUEST_SECONDS = Histogram("cramp_http_request_duration_seconds", "Time to answer an HTTP request",
                            ["endpoint", "service"], buckets=LATENCY_BUCKETS)
CARDS = Counter("cramp_cards", "Cards returned, once per contributor listed on the card",
                ["indicator", "contributor"])
PREFETCH_FALLBACKS = Counter("cramp_prefetch_fallbacks", "Prefetch keys fetched from the client's FHIR server "
                             "because the client did not supply them", ["key"])
PREFETCH_UNAVAILABLE = Counter("cramp_prefetch_unavailable", "Prefetch keys that could not be had (the call "
                               "answered 412)", ["key"])
FHIR_SECONDS = Histogram("cramp_fhir_request_duration_seconds", "Time of one request to the client's FHIR server "
                         "(headers and body)", buckets=LATENCY_BUCKETS)
FEEDBACK = Counter("cramp_feedback", "Feedback entries stored, by outcome and override reason code",
                   ["outcome", "reason"])
SUPPRESSIONS = Counter("cramp_suppressed_cards", "Cards not shown because an earlier override suppresses them",
                       ["card"])


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus text format, summed over every worker in multiprocess mode."""
    folder = multiprocess_dir()
    if folder:
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=folder)
    else:
        registry = DEFAULT_REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST


def card_kind(card_key: str) -> str:
    """A card key's bounded kind for labels: ``quinine`` or ``contributors`` (the key's ids are left out)."""
    return card_key.split(":", 1)[0]
