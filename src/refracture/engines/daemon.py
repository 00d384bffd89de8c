"""Spark's Python daemon (``spark.python.daemon.module``) with refracture imported first.

Spark forks every Python worker of an executor from one daemon process. A worker that loads
the registered model (``mlflow.pyfunc.spark_udf``) puts the copy of refracture saved with the
model first on ``sys.path``; in a fresh worker, ``import refracture`` would then find that copy,
which may be older than the refracture running the job (and lack the functions the job sends).
Importing refracture here, before the fork, makes every worker use the installed refracture,
as the driver and the local engine do; the registered model's ``predict`` then runs the same
code as ``--engine local``. It also saves each worker the import time.
"""

from __future__ import annotations

import refracture.engines.spark_extract  # noqa: F401 - imported before the workers fork
import refracture.engines.spark_score  # noqa: F401

if __name__ == "__main__":
    from pyspark.daemon import manager

    manager()
