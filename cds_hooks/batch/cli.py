"""`cramp-cds review INPUT…`: the batch chart review on the command line.

Wiring into the `cramp-cds` command (cds_hooks/cli.py): `add_parser(subparsers)` registers the `review`
subcommand (or use `configure(parser)` + `run(args)` with a command table); `run(args)` returns the exit
code (cds_hooks.batch.errors). Standalone: `python -m cds_hooks.batch INPUT…`.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime
from datetime import time as dtime

from cds_hooks.batch import errors
from cds_hooks.batch.errors import BatchError
from cds_hooks.batch.fhir_source import TOKEN_ENV, FhirOptions
from cds_hooks.batch.inputs import is_url
from cds_hooks.batch.progress import Progress
from cds_hooks.batch.reports.identity import check_link_template
from cds_hooks.batch.reports.options import ReportOptions
from cds_hooks.batch.reports.since import PreviousReportError, read_previous
from cds_hooks.batch.reports.writer import FHIR_WORKLIST, FORMATS, format_for, write_report
from cds_hooks.batch.runner import RunConfig, default_workers, run_review
from cds_hooks.batch.stream import DEFAULT_CHUNK_BYTES
from plugin import ReviewOptions, default_knowledge
from plugin.cards import TRIGGER_POLICIES

NAME = "review"
HELP = "batch chart review of FHIR Bundles, Bulk Data ndjson exports or a FHIR server"
DESCRIPTION = """\
Review every patient in FHIR R4 data for contributors to nocturnal leg cramps, with the same engine as
the live CDS Hooks service, and write a report (JSON, CSV or HTML).

INPUT: a Bundle .json file, a Bulk Data .ndjson(.gz) file or manifest.json, a folder of these, or a FHIR
server base URL (http/https: Bulk $export, else per-patient searches; bearer token from $CRAMP_FHIR_TOKEN).
"""
EPILOG = """\
exit codes: 0 ok; 2 usage error; 3 report written but some records were bad (listed in the report);
4 could not run (missing input, server refused, output not writable).

examples:
  cramp-cds review exports/2024-06/ --only-documented-cramps --format html --out review.html
  cramp-cds review exports/manifest.json --contributor thiazide-diuretic --contributor laba --format csv
  cramp-cds review https://fhir.example.org/r4 --group diabetes-clinic --as-of 2024-06-30 --out review.json
  cramp-cds review exports/2024-07/ --format html --out worklist.html --identifiers \
      --patient-link 'https://ehr.example.org/patient/{id}' --since-report review-2024-06.json \
      --fhir-worklist worklist-bundle.json
"""


def as_of_date(text: str) -> datetime:
    """`2024-06-30` -> the end of that day in UTC (results dated that day count); a full date-time as given."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), dtime(23, 59, 59), tzinfo=UTC)
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (expected YYYY-MM-DD)") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def contributor_id(text: str) -> str:
    known = default_knowledge().contributors
    if text not in known:
        raise argparse.ArgumentTypeError(f"unknown contributor {text!r}; valid ids: {', '.join(known)}")
    return text


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def positive_number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def id_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def link_template(text: str) -> str:
    try:
        return check_link_template(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_review_options(group) -> None:
    """`--as-of`, the clinical windows and `--no-validate`: the engine's options, the same in every batch driver
    (`review_options(args)` reads them back)."""
    group.add_argument("--as-of", type=as_of_date, metavar="DATE",
                       help="the 'now' for look-backs, YYYY-MM-DD (default: today, UTC)")
    group.add_argument("--lab-lookback-days", type=positive_int, default=ReviewOptions.lab_lookback_days,
                       metavar="N", help="electrolyte results older than this are ignored (default: %(default)s)")
    group.add_argument("--stale-order-days", type=positive_int, default=ReviewOptions.stale_order_days, metavar="N",
                       help="an order with no activity of its class this long is 'possibly stale' (default: %(default)s)")
    group.add_argument("--administration-window-days", type=positive_int,
                       default=ReviewOptions.administration_window_days, metavar="N",
                       help="a medication administration counts this long after it was given (default: %(default)s)")
    group.add_argument("--pregnancy-window-days", type=positive_int, default=ReviewOptions.pregnancy_window_days,
                       metavar="N", help="a pregnancy counts this long after onset or recording (default: %(default)s)")
    group.add_argument("--no-validate", action="store_true",
                       help="skip the strict FHIR R4 validation warnings (faster)")


def review_options(args: argparse.Namespace) -> ReviewOptions:
    """The engine's options from what `add_review_options` added."""
    return ReviewOptions(lab_lookback_days=args.lab_lookback_days, validate=not args.no_validate,
                         stale_order_days=args.stale_order_days,
                         administration_window_days=args.administration_window_days,
                         pregnancy_window_days=args.pregnancy_window_days)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders, manifests or FHIR base URLs")
    out = parser.add_argument_group("report")
    out.add_argument("--format", choices=FORMATS, help="report format (default: from --out's suffix, else json)")
    out.add_argument("--out", metavar="PATH", help="write the report here (default: stdout)")
    out.add_argument("--only-documented-cramps", action="store_true",
                     help="list only patients whose record documents leg cramps")
    out.add_argument("--contributor", action="append", type=contributor_id, default=[], metavar="ID",
                     help="list only patients with this contributor (repeatable: any of them)")
    work = parser.add_argument_group("worklist")
    work.add_argument("--identifiers", action="store_true",
                      help="show each patient's name, MRN, birth date, age and sex in the report (off by default; "
                           "never written to logs)")
    work.add_argument("--identifier-system", metavar="URI",
                      help="the system of the identifier shown as MRN (default: the identifier typed MR, else the "
                           "first)")
    work.add_argument("--patient-link", type=link_template, metavar="TEMPLATE",
                      help="link each patient to the EHR: a URL with {id} (FHIR id) or {identifier} (MRN; needs "
                           "--identifiers), e.g. 'https://ehr.example.org/patient/{id}'")
    work.add_argument("--since-report", metavar="FILE",
                      help="an earlier JSON report of the same panel: mark patients new to the worklist or with a "
                           "new contributor")
    work.add_argument("--card-trigger", choices=TRIGGER_POLICIES,
                      default=os.environ.get("CRAMP_TRIGGER_POLICY") if os.environ.get(
                          "CRAMP_TRIGGER_POLICY") in TRIGGER_POLICIES else "documented",
                      help="the live service's trigger policy, for the card shown in each patient's detail "
                           "(default: $CRAMP_TRIGGER_POLICY, else %(default)s)")
    work.add_argument("--fhir-worklist", metavar="PATH",
                      help="also write the worklist as a FHIR transaction Bundle (a List and one Task per patient)")
    review = parser.add_argument_group("review")
    add_review_options(review)
    review.add_argument("--workers", type=positive_int, default=default_workers(), metavar="N",
                        help="parallel worker processes (default: CPU count, %(default)s)")
    review.add_argument("--chunk-bytes", type=positive_int, default=DEFAULT_CHUNK_BYTES, help=argparse.SUPPRESS)
    server = parser.add_argument_group("FHIR server input")
    server.add_argument("--group", metavar="ID", help="export (or search) the members of Group/ID")
    server.add_argument("--patients", type=id_list, default=(), metavar="ID,ID",
                        help="search these patients one by one (no $export)")
    server.add_argument("--no-export", action="store_true",
                        help="do not try $export; search the --patients / --group members one by one")
    server.add_argument("--export-timeout", type=positive_number, default=3600.0, metavar="SECONDS",
                        help="longest total wait for a $export to finish (default: %(default)g)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no summary line on stderr")
    parser.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register `review` on the `cramp-cds` sub-parsers; the parsed namespace carries `run`."""
    parser = subparsers.add_parser(NAME, help=HELP)
    configure(parser)
    parser.set_defaults(run=run)
    return parser


def build_parser(prog: str = "cramp-cds review") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog)
    configure(parser)
    return parser


def _usage(message: str) -> int:
    print(f"cramp-cds review: error: {message}", file=sys.stderr)
    return errors.USAGE


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if (args.group or args.patients or args.no_export) and not any(is_url(i) for i in args.inputs):
        return _usage("--group, --patients and --no-export need a FHIR server URL among the inputs")
    if args.group and args.patients:
        return _usage("give --group or --patients, not both")
    if args.patient_link and "{identifier}" in args.patient_link and not args.identifiers:
        return _usage("a --patient-link with {identifier} puts the MRN in the page: add --identifiers")
    try:
        previous = read_previous(args.since_report) if args.since_report else None
    except PreviousReportError as exc:
        return _usage(f"--since-report: {exc}")
    report = ReportOptions(identifiers=args.identifiers, identifier_system=args.identifier_system,
                           patient_link=args.patient_link, previous=previous, card_trigger=args.card_trigger)
    fmt = format_for(args.out, args.format)
    progress = Progress.for_terminal(quiet=args.quiet)
    try:
        fhir = FhirOptions(group=args.group, patients=tuple(args.patients), no_export=args.no_export,
                           token=os.environ.get(TOKEN_ENV) or None, max_wait=args.export_timeout)
        config = RunConfig(
            as_of=args.as_of or as_of_date(datetime.now(UTC).date().isoformat()),
            options=review_options(args), workers=args.workers, chunk_bytes=args.chunk_bytes, fhir=fhir,
            only_documented_cramps=args.only_documented_cramps, contributors=tuple(dict.fromkeys(args.contributor)))
        result = run_review(list(args.inputs), config, progress)
        write_report(result, fmt, args.out, options=report)
        if args.fhir_worklist:
            write_report(result, FHIR_WORKLIST, args.fhir_worklist, options=report)
    except BatchError as exc:
        progress.close()
        print(f"cramp-cds review: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        progress.close()
        print("cramp-cds review: interrupted", file=sys.stderr)
        return errors.COULD_NOT_RUN
    except Exception as exc:
        progress.close()
        if args.traceback:
            raise
        print(f"cramp-cds review: internal error ({type(exc).__name__}); run with --traceback for details",
              file=sys.stderr)
        return errors.COULD_NOT_RUN
    progress.finish(result, time.monotonic() - started)
    lost = result.bad_records or result.export_errors   # the export itself lost data too
    return errors.COMPLETED_WITH_BAD_RECORDS if lost else errors.OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)
