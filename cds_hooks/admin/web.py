"""``/admin/feedback``: the feedback report as a page (``?format=csv`` for CSV; ``?since=``/``?until=`` dates).

Off unless ``CRAMP_ADMIN=on``; then it needs ``CRAMP_ADMIN_TOKEN``, as ``Authorization: Bearer <token>`` or as
the password of HTTP Basic (any user name), so a browser can ask for it. The client JWT check of the service
does not apply here (this is not an EHR's call): the service lists the path among its own-token paths.
"""
from __future__ import annotations

import base64
import binascii
import hmac
from datetime import UTC, datetime

from flask import Blueprint, Response, current_app, request

from cds_hooks.admin.report import to_csv, to_html
from cds_hooks.service.errors import BadRequest, Issue, outcome_response
from cds_hooks.storage.analytics import summarise

PATH = "/admin/feedback"
admin_blueprint = Blueprint("admin", __name__)


def _offered_token() -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return ""


def _date(name: str) -> datetime | None:
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw).replace(tzinfo=UTC)
    except ValueError:
        raise BadRequest(f"{name} must be a date such as 2026-11-01, got {raw[:40]!r}", expression=name) from None


@admin_blueprint.get(PATH)
def feedback_report() -> Response:
    st = current_app.extensions["cramp_cds"]
    expected = st.settings.admin_token or ""
    if not expected or not hmac.compare_digest(_offered_token().encode(), expected.encode()):
        return outcome_response(401, [Issue("the feedback report needs CRAMP_ADMIN_TOKEN (Bearer, or Basic password)",
                                            "login")],
                                headers={"WWW-Authenticate": 'Basic realm="cramp-cds admin", charset="UTF-8"'})
    summary = summarise(st.database, since=_date("since"), until=_date("until"))
    if request.args.get("format", "html") == "csv":
        response = Response(to_csv(summary), mimetype="text/csv")
        response.headers["Content-Disposition"] = 'attachment; filename="cramp-feedback.csv"'
    else:
        response = Response(to_html(summary), mimetype="text/html")
        response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response.headers["Cache-Control"] = "no-store"
    return response
