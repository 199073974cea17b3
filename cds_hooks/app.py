"""The deployable app: the CDS Hooks service plus the tools that plug into it.

Production: ``gunicorn -c python:cds_hooks.service.gunicorn_conf 'cds_hooks.app:create_app()'``.

This is the composition root: the service (:mod:`cds_hooks.service`) does not import the sandbox;
the sandbox's page is handed to the service's factory here when ``CRAMP_SANDBOX`` is on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cds_hooks.gc_policy import collector_paused

if TYPE_CHECKING:
    from flask import Flask

    from cds_hooks.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app. ``settings=None`` reads the environment (for ``gunicorn 'cds_hooks.app:create_app()'``).

    Start-up (the service's imports included, hence imported here) runs with the cyclic garbage collector
    paused: it creates over 100,000 objects that live as long as the process (modules, FHIR models, knowledge),
    and collecting between them was a fifth of the start-up (docs/performance.md, "Start-up under 1 s").
    """
    with collector_paused():
        from cds_hooks.service.app import create_app as create_service_app
        from cds_hooks.settings import Settings

        settings = settings or Settings.from_env()
        blueprints = []
        if settings.sandbox:
            from cds_hooks.sandbox.web import sandbox_blueprint  # /sandbox/: cards without an EHR

            blueprints.append(sandbox_blueprint)
        if settings.admin:
            from cds_hooks.admin.web import admin_blueprint  # /admin/feedback: the feedback report, own token

            blueprints.append(admin_blueprint)
        return create_service_app(settings, blueprints)
