"""The SparkSession a run uses: the cluster's when there is one, a local one when `--master` asks for it."""
from __future__ import annotations

import os
import sys

APP_NAME = "cramp-cds spark-review"


def spark_session(master: str | None = None, conf: dict[str, str] | None = None):
    """`SparkSession.builder.getOrCreate()`, without forcing a master (spark-submit, Databricks, EMR supply it).

    With a `local[...]` master the Python workers are this interpreter, so they import this installation.
    """
    from pyspark.sql import SparkSession

    if master and master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(APP_NAME)
    if master:
        builder = builder.master(master)
    for key, value in (conf or {}).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()
