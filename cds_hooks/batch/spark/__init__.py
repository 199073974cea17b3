"""`cramp-cds spark-review`: the batch chart review on Apache Spark (the optional extra `cramp-cds[spark]`).

| module | job |
|---|---|
| `cli` | the `spark-review` command and `python -m cds_hooks.batch.spark` (for `spark-submit`); no pyspark import until it runs |
| `session` | the SparkSession: `getOrCreate()`, a master only when asked (`--master local[2]`) |
| `hadoop_path` | `HadoopPath`: discovery's `pathlib` methods over Hadoop file systems (`s3a://`, `abfss://`, `dbfs:/`, `hdfs://`) |
| `job` | the driver: lines -> `steps.line_facts` -> partial records shuffled by (export, patient) -> `steps.review_patient` |
| `tables` | the output tables' schemas, rows and writing (Parquet, or Delta when delta-spark is present) |
"""
