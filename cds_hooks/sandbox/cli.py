"""``cramp-cds sandbox``: play the EHR from a terminal.

    cramp-cds sandbox --list
    cramp-cds sandbox ckd-diuretics                                  # patient-view, in-process service
    cramp-cds sandbox quinine-cramps --hook order-select --order quinine
    cramp-cds sandbox my-bundle.json --hook order-sign --order rxnorm:313988 --url http://127.0.0.1:8080
    cramp-cds sandbox hctz-no-labs --json                            # the raw response

It builds the request as an EHR would (:mod:`cds_hooks.sandbox.requests_builder`), sends it to the in-process
service (Flask test client, local profile, authentication off, a throw-away database) or to ``--url`` (discovery
first, then the service), and prints the cards. Exit codes: 0 ok, 1 service error (status and the
OperationOutcome's diagnostics on stderr), 2 usage.

Wiring: ``cds_hooks.cli.COMMANDS["sandbox"] = Command(HELP, configure, run)``, or :func:`add_parser` for a plain
``argparse`` sub-parsers object. Meanwhile: ``python -m cds_hooks.sandbox ...``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import secrets
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cds_hooks.sandbox.requests_builder import HOOKS, STYLES, SandboxError, build_request, service_for_hook
from cds_hooks.sandbox.samples import list_samples, load_bundle

HELP = "play the EHR: send a hook request built from a sample patient or a Bundle, print the cards"
EXIT_OK, EXIT_SERVICE, EXIT_USAGE = 0, 1, 2
WIDTH = 100


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", nargs="?", metavar="BUNDLE|SAMPLE",
                        help="a FHIR Bundle file (one patient), or a sample name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the sample patients and exit")
    parser.add_argument("--hook", choices=HOOKS, default="patient-view", help="the hook to fire (default: %(default)s)")
    parser.add_argument("--order", metavar="DRUG",
                        help="order hooks: the drug drafted, a name (quinine) or an RxNorm code (9071, rxnorm:313988)")
    parser.add_argument("--url", help="call a running service at this base URL (e.g. http://127.0.0.1:8080) "
                        "instead of an in-process one")
    parser.add_argument("--service", metavar="ID", help="service id to call (default: the one discovery lists "
                        "for --hook)")
    parser.add_argument("--trigger", choices=("documented", "any"),
                        help="in-process only: the patient-view trigger policy (CRAMP_TRIGGER_POLICY)")
    parser.add_argument("--user", default="Practitioner/sandbox", help="context.userId (default: %(default)s)")
    parser.add_argument("--style", choices=STYLES, default="spec",
                        help="draftOrders shape: spec (Bundle type collection) or reference-sandbox "
                        "(the looser shape sandbox.cds-hooks.org sends)")
    parser.add_argument("--json", action="store_true", help="print the raw JSON response instead of the cards")
    parser.add_argument("--show-request", action="store_true", help="print the request JSON to stderr too")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("sandbox", help=HELP, description=HELP)
    configure(parser)
    parser.set_defaults(func=run)
    return parser


# --- transports ----------------------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int
    body: Any
    text: str = ""


class InProcess:
    """The service in this process: local profile, authentication off, a temporary database."""

    def __init__(self, trigger: str | None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="cramp-sandbox-")
        from cds_hooks.app import create_app
        from cds_hooks.settings import Settings

        env = {k: v for k, v in os.environ.items() if k.startswith("CRAMP_")}
        env.update({"CRAMP_PROFILE": "local", "CRAMP_AUTH": "off", "CRAMP_DATA_DIR": self._tmp.name,
                    "CRAMP_DATABASE": os.path.join(self._tmp.name, "sandbox.db"),
                    "CRAMP_SECRET_KEY": secrets.token_urlsafe(24)})
        env.setdefault("CRAMP_LOG_LEVEL", "ERROR")  # the "auth is off" warning is moot in-process
        settings = Settings.from_env(env)
        if trigger:
            settings = dataclasses.replace(settings, trigger_policy=trigger)
        self.client = create_app(settings).test_client()
        self.base = "(in-process)"

    def get(self, path: str) -> Reply:
        r = self.client.get(path)
        return Reply(r.status_code, r.get_json(silent=True), r.get_data(as_text=True))

    def post(self, path: str, body: Any) -> Reply:
        r = self.client.post(path, json=body)
        return Reply(r.status_code, r.get_json(silent=True), r.get_data(as_text=True))

    def close(self) -> None:
        self._tmp.cleanup()


class Remote:
    def __init__(self, url: str) -> None:
        import requests

        self.session = requests.Session()
        self.session.headers["Accept"] = "application/json"
        self.base = url.rstrip("/")
        self.base = self.base.removesuffix("/cds-services")

    def _reply(self, response: Any) -> Reply:
        try:
            body = response.json()
        except ValueError:
            body = None
        return Reply(response.status_code, body, response.text)

    def get(self, path: str) -> Reply:
        return self._reply(self.session.get(self.base + path, timeout=(5, 30)))

    def post(self, path: str, body: Any) -> Reply:
        return self._reply(self.session.post(self.base + path, json=body, timeout=(5, 60)))

    def close(self) -> None:
        self.session.close()


@contextlib.contextmanager
def transport(url: str | None, trigger: str | None) -> Iterator[InProcess | Remote]:
    t: InProcess | Remote = Remote(url) if url else InProcess(trigger)
    try:
        yield t
    finally:
        t.close()


# --- output --------------------------------------------------------------------------------------------------

def markdown_to_text(md: str) -> str:
    """The card Markdown subset as plain text: emphasis and code marks dropped, backslash escapes undone."""
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", md)
    text = re.sub(r"(?<![\\*])\*(?!\s)(.+?)(?<![\\\s])\*", r"\1", text)
    text = re.sub(r"`([^`]*)`", r"\1", text)
    return re.sub(r"\\([\\`*_{}\[\]()#+\-.!|>~])", r"\1", text)


def _wrap(text: str, indent: str) -> list[str]:
    lines: list[str] = []
    for para in markdown_to_text(text).split("\n"):
        if not para.strip():
            lines.append("")
            continue
        bullet = para.startswith("- ")
        lines.extend(textwrap.wrap(para, WIDTH, initial_indent=indent,
                                   subsequent_indent=indent + ("  " if bullet else ""),
                                   break_on_hyphens=False) or [indent])
    return lines


def format_card(card: dict) -> str:
    out = [f"[{str(card.get('indicator', '?')).upper()}] {card.get('summary', '')}"]
    if card.get("detail"):
        out += _wrap(card["detail"], "  ")
    source = card.get("source") or {}
    if source:
        out.append(f"  Source: {source.get('label', '')}" + (f" <{source['url']}>" if source.get("url") else ""))
    suggestions = card.get("suggestions") or []
    if suggestions:
        out.append(f"  Suggestions ({card.get('selectionBehavior', 'unspecified')}):")
        for s in suggestions:
            out.append(f"    * {s.get('label', '')}" + ("  [recommended]" if s.get("isRecommended") else ""))
            for a in s.get("actions") or []:
                target = a.get("resourceId") or (a.get("resource") or {}).get("resourceType", "")
                desc = f": {a['description']}" if a.get("description") else ""
                out.append(f"        - {a.get('type', '?')} {target}{desc}")
    links = card.get("links") or []
    if links:
        out.append("  Links:")
        out += [f"    - {link.get('label', '')} <{link.get('url', '')}>" for link in links]
    reasons = card.get("overrideReasons") or []
    if reasons:
        out.append("  Override reasons: " + "; ".join(
            f"{r.get('display', r.get('code'))} ({r.get('code')})" for r in reasons))
    return "\n".join(out)


def format_cards(response: dict, service_id: str, patient_id: str) -> str:
    cards = response.get("cards") or []
    head = f"{service_id} for Patient/{patient_id}: {len(cards)} card{'' if len(cards) == 1 else 's'}"
    if not cards:
        return head + "\n(no cards: the service had nothing to say for this patient and hook)"
    return "\n\n".join([head] + [format_card(c) for c in cards])


def diagnostics(reply: Reply) -> str:
    body = reply.body
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        texts = [i.get("diagnostics") or i.get("code", "") for i in body.get("issue") or [] if isinstance(i, dict)]
        return "; ".join(t for t in texts if t) or "(an OperationOutcome without diagnostics)"
    return (reply.text or "").strip()[:500] or "(empty body)"


def print_samples() -> int:
    samples = list_samples()
    if not samples:
        print("no sample patients found (set CRAMP_SANDBOX_SAMPLES to the samples/patients folder)",
              file=sys.stderr)
        return EXIT_USAGE
    width = max(len(s.name) for s in samples)
    for s in samples:
        print(f"{s.name:<{width}}  {s.patient_id:<20} {s.description}")
    return EXIT_OK


# --- the command ---------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    if args.list:
        return print_samples()
    if not args.source:
        print("cramp-cds sandbox: give a Bundle file or a sample name (see --list)", file=sys.stderr)
        return EXIT_USAGE
    if args.hook == "patient-view" and args.order:
        print("cramp-cds sandbox: --order is for order-select and order-sign", file=sys.stderr)
        return EXIT_USAGE
    if args.url and args.trigger:
        print("cramp-cds sandbox: --trigger applies to the in-process service only (set CRAMP_TRIGGER_POLICY "
              "on the server instead)", file=sys.stderr)
        return EXIT_USAGE
    try:
        data = load_bundle(args.source)
    except SandboxError as exc:
        print(f"cramp-cds sandbox: {exc}", file=sys.stderr)
        return EXIT_USAGE

    import requests

    try:
        with transport(args.url, args.trigger) as t:
            found = t.get("/cds-services")
            if found.status != 200 or not isinstance(found.body, dict):
                print(f"cramp-cds sandbox: discovery at {t.base}/cds-services answered {found.status}: "
                      f"{diagnostics(found)}", file=sys.stderr)
                return EXIT_SERVICE
            try:
                service = service_for_hook(found.body, args.hook, args.service)
                body = build_request(data, args.hook, service, args.order, user_id=args.user, style=args.style)
            except SandboxError as exc:
                print(f"cramp-cds sandbox: {exc}", file=sys.stderr)
                return EXIT_USAGE
            if args.show_request:
                print(json.dumps(body, indent=2), file=sys.stderr)
            reply = t.post(f"/cds-services/{service['id']}", body)
    except requests.RequestException as exc:
        print(f"cramp-cds sandbox: cannot reach {args.url}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
        return EXIT_SERVICE
    if reply.status != 200 or not isinstance(reply.body, dict):
        print(f"cramp-cds sandbox: {service['id']} answered HTTP {reply.status}: {diagnostics(reply)}",
              file=sys.stderr)
        if args.json and reply.body is not None:
            print(json.dumps(reply.body, indent=2))
        return EXIT_SERVICE
    if args.json:
        print(json.dumps(reply.body, indent=2, ensure_ascii=False))
    else:
        print(format_cards(reply.body, service["id"], body["context"]["patientId"]))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cramp-cds sandbox", description=HELP)
    configure(parser)
    args = parser.parse_args(argv)
    from cds_hooks.settings import SettingsError

    try:
        return run(args)
    except SettingsError as exc:
        print(f"cramp-cds sandbox: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
