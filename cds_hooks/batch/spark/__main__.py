"""`spark-submit …/cds_hooks/batch/spark/__main__.py INPUT… --out DIR`, or `python -m cds_hooks.batch.spark`."""
import sys

from cds_hooks.batch.spark.cli import main

sys.exit(main())
