"""Batch chart review: the live service's engine over whole panels (Bundles, Bulk Data ndjson, a FHIR server).

| module | job |
|---|---|
| `errors` | named exit codes, typed exceptions |
| `model` | BadRecord, PatientResult, BatchResult |
| `inputs` | find the inputs: Bundle/resource JSON, ndjson(.gz), manifests, folders, URLs |
| `steps` | the two pure steps every driver shares: `line_facts` (per line) and `review_patient` (per patient) |
| `stream` | ndjson -> compact per-patient facts, in newline-aligned byte-range chunks |
| `bundles` | Bundle / loose-resource JSON files -> `plugin.review` per patient |
| `fhir_source` | a FHIR server: Bulk `$export` (kick-off, poll, download) or per-patient searches |
| `runner` | the single-machine driver: tasks, process pool, ordered merge, `steps.review_patient`, filters |
| `shards` | per-patient partial records and results spilled to disk by shard (flat memory) |
| `progress` | tqdm bar on a terminal, one JSON summary line otherwise |
| `reports/` | `summary` (shared rows and counts), `html` (self-contained page), `writer` (JSON, CSV, output) |
| `cli` | the `review` subcommand (`add_parser`, `configure`, `run`) |

Library use: `run_review(["export/"], RunConfig(as_of=...))` -> `BatchResult` (patients read back from disk);
`reports.writer.write_report(result, "json", path)` streams the report, `render(result, "json")` returns it.
"""
from cds_hooks.batch.model import BadRecord, BatchResult, PatientResult
from cds_hooks.batch.runner import RunConfig, run_review

__all__ = ["BadRecord", "BatchResult", "PatientResult", "RunConfig", "run_review"]
