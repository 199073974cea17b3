"""Named exit codes and the typed exceptions of the batch review (one place, like cumulus-etl's errors.py).

| code | name | meaning |
|---|---|---|
| 0 | `OK` | every input was read and every patient reviewed |
| 2 | `USAGE` | bad command line (argparse), e.g. an unknown `--contributor` id |
| 3 | `COMPLETED_WITH_BAD_RECORDS` | the report was written, but some records could not be read (bad ndjson lines, failed downloads, a patient whose FHIR searches failed); they are listed in the report |
| 4 | `COULD_NOT_RUN` | no report: an input is missing or unusable, the FHIR server refused the export, the output could not be written |
"""
from __future__ import annotations

OK = 0
USAGE = 2
COMPLETED_WITH_BAD_RECORDS = 3
COULD_NOT_RUN = 4


class BatchError(Exception):
    """The batch review cannot produce a report; the message is safe to show (no PHI, no token)."""

    exit_code = COULD_NOT_RUN


class InputError(BatchError):
    """An input path does not exist, holds nothing readable, or a manifest is malformed."""


class FhirSourceError(BatchError):
    """The FHIR server could not be used: kick-off refused, export failed or timed out, auth rejected."""


class ExportNotSupported(FhirSourceError):
    """The server answered the `$export` kick-off with 4xx: fall back to per-patient searches if we can."""


class OutputError(BatchError):
    """The report could not be written."""


class UsageError(BatchError):
    """A combination of options that argparse cannot check by itself."""

    exit_code = USAGE
