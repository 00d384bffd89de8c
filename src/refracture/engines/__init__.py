"""Where the work of ``extract`` and ``score`` runs: the local engine (this process and a pool
of worker processes; :mod:`refracture.features`, :mod:`refracture.scoring`) or Apache Spark.

The Spark engine (``--engine spark``, ``pip install "refracture[spark]"``, Java 17+) runs the
local engine's own per-patient and per-row functions on Spark executors and assembles the
output files on the driver with the local engine's code, so the files are the same.
Modules: :mod:`~refracture.engines.session` (checks, a quiet session, progress),
:mod:`~refracture.engines.spark_extract` and :mod:`~refracture.engines.spark_score`.
pyspark is imported only when a Spark function runs.
"""

from refracture.engines.session import (
    DEFAULT_MASTER,
    SparkHandle,
    require_spark,
    spark_session,
)
from refracture.engines.spark_extract import extract_spark
from refracture.engines.spark_score import score_spark

__all__ = [
    "DEFAULT_MASTER",
    "SparkHandle",
    "extract_spark",
    "require_spark",
    "score_spark",
    "spark_session",
]
