"""`cramp-cds spark-review INPUT… --out DIR`: the batch review on Spark, writing tables instead of a report.

`configure(parser)` + `run(args)` plug into the `cramp-cds` command table; `main()` is the entry point of
`python -m cds_hooks.batch.spark` (what `spark-submit` runs). pyspark is imported only when a run starts,
so the command is listed (and says how to install the extra) where pyspark is missing.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from cds_hooks.batch import errors
from cds_hooks.batch.cli import add_review_options, as_of_date, contributor_id, positive_int, review_options
from cds_hooks.batch.errors import BatchError

NAME = "spark-review"
HELP = "batch chart review of Bulk Data exports on Apache Spark, into Parquet/Delta tables"
DESCRIPTION = """\
Review every patient of Bulk Data ndjson exports on Apache Spark with the engine of the live service and
of `cramp-cds review`, and write the tables findings, patients, bad_records and run under --out (Parquet,
or Delta when delta-spark is present). Needs the extra: pip install 'cramp-cds[spark]' (and Java 17).

INPUT: a Bulk export folder, its manifest.json, or ndjson(.gz) files, as URIs Spark reads: local paths,
s3a://, abfss://, dbfs:/, hdfs://.
"""
EPILOG = """\
exit codes: 0 ok; 2 usage error; 3 tables written but some records were bad (in bad_records);
4 could not run (no input, pyspark or Java missing, output not writable).

examples:
  cramp-cds spark-review exports/2026-11/ --master 'local[2]' --out review-tables/
  spark-submit --master yarn "$(python -c 'import cds_hooks.batch.spark as s; print(s.__path__[0])')/__main__.py" \
      s3a://bucket/export/ --out s3a://bucket/review/     (the wheel installed on every node: docs/batch.md)
"""
TABLE_FORMATS = ("auto", "parquet", "delta")


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE: {text!r}")
    return key, value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = DESCRIPTION
    parser.epilog = EPILOG
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="export folders, manifests or ndjson files")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder (URI) for the tables; replaced")
    parser.add_argument("--table-format", choices=TABLE_FORMATS, default="auto",
                        help="auto (default): Delta when delta-spark is present, else Parquet")
    parser.add_argument("--only-documented-cramps", action="store_true",
                        help="findings only for patients whose record documents leg cramps")
    parser.add_argument("--contributor", action="append", type=contributor_id, default=[], metavar="ID",
                        help="findings only for patients with this contributor (repeatable: any of them)")
    add_review_options(parser)
    spark = parser.add_argument_group("Spark")
    spark.add_argument("--master", metavar="URL",
                       help="e.g. local[4] on a laptop (default: whatever spark-submit or the cluster supplies)")
    spark.add_argument("--partitions", type=positive_int, metavar="N",
                       help="partitions of the per-patient shuffle (default: the default parallelism)")
    spark.add_argument("--conf", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                       help="a Spark setting for a session this command creates (repeatable)")
    parser.add_argument("--json", metavar="FILE", dest="summary_json",
                        help="also write a summary for people as JSON, read back from the tables")
    parser.add_argument("--html", metavar="FILE", dest="summary_html",
                        help="also write a summary for people as one self-contained HTML page, read from the tables")
    parser.add_argument("--quiet", action="store_true", help="no summary line on stderr")
    parser.add_argument("--traceback", action="store_true", help=argparse.SUPPRESS)


def build_parser(prog: str = f"cramp-cds {NAME}") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog)
    configure(parser)
    return parser


def _fail(message: str, code: int = errors.COULD_NOT_RUN) -> int:
    print(f"cramp-cds {NAME}: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    try:
        import pyspark  # noqa: F401 - the optional extra
    except ImportError:
        return _fail("pyspark is not installed: pip install 'cramp-cds[spark]' (Spark also needs Java 17)")
    from cds_hooks.batch.runner import RunConfig
    from cds_hooks.batch.spark.job import run_spark_review
    from cds_hooks.batch.spark.session import spark_session

    config = RunConfig(
        as_of=args.as_of or as_of_date(datetime.now(UTC).date().isoformat()),
        options=review_options(args),
        only_documented_cramps=args.only_documented_cramps, contributors=tuple(dict.fromkeys(args.contributor)))
    try:
        spark = spark_session(args.master, dict(args.conf))
        result = run_spark_review(spark, list(args.inputs), config, args.out,
                                  table_format_wanted=args.table_format, partitions=args.partitions)
        if args.summary_json or args.summary_html:
            from cds_hooks.batch.spark import summary as people
            from plugin import default_knowledge

            doc = people.read_summary(spark, args.out, result.table_format, default_knowledge())
            if args.summary_json:
                people.write_json(doc, args.summary_json)
            if args.summary_html:
                people.write_html(doc, args.summary_html)
    except BatchError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted")
    except Exception as exc:
        if args.traceback:
            raise
        return _fail(f"could not run ({type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}); "
                     "run with --traceback for details")
    if not args.quiet:
        print(json.dumps(result.to_dict() | {"seconds": round(time.monotonic() - started, 1)}), file=sys.stderr)
    lost = result.bad_records or result.export_errors   # as `review`: the export itself lost data too
    return errors.COMPLETED_WITH_BAD_RECORDS if lost else errors.OK


def main(argv: Sequence[str] | None = None) -> int:
    return run(build_parser("python -m cds_hooks.batch.spark").parse_args(argv))
