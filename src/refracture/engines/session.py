"""A Spark session for refracture: checked before it starts, quiet while it runs, followed.

pyspark is an optional dependency (``pip install "refracture[spark]"``) and Spark runs on the
Java virtual machine, so both are checked first and their absence is a one-line input error
(exit code 2). Spark's own log (the JVM's and the executors' output) goes to a file, not the
terminal; progress comes from Spark's status tracker on the driver.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from refracture.errors import InputError, RefractureError
from refracture.progress import Progress
from refracture.text import clip

__all__ = [
    "DEFAULT_MASTER",
    "JAVA_MAJOR",
    "SparkHandle",
    "find_java",
    "java_major",
    "require_spark",
    "run_followed",
    "spark_conf",
    "spark_session",
]

#: Every core of this machine.
DEFAULT_MASTER = "local[*]"
#: The oldest Java that the supported pyspark versions all run on.
JAVA_MAJOR = 17
INSTALL_HINT = 'install it with: pip install "refracture[spark]"'


def find_java() -> str | None:
    """The ``java`` Spark will start: ``$JAVA_HOME/bin/java`` when JAVA_HOME is set (as
    Spark's launcher does), else ``java`` on PATH; None when there is none."""
    home = os.environ.get("JAVA_HOME")
    if home:
        java = Path(home) / "bin" / "java"
        return str(java) if java.is_file() and os.access(java, os.X_OK) else None
    return shutil.which("java")


def java_major(java: str) -> int | None:
    """The major version of a ``java`` executable (8 for "1.8.0_392", 17 for "17.0.15")."""
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', proc.stderr + proc.stdout)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_spark() -> None:
    """Raise InputError (exit 2) unless pyspark can be imported and Java 17+ can be started."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise InputError(
            f"--engine spark needs pyspark, which is not installed; {INSTALL_HINT}"
        ) from None
    java = find_java()
    where = "JAVA_HOME" if os.environ.get("JAVA_HOME") else "PATH"
    if java is None:
        raise InputError(
            f"--engine spark needs Java {JAVA_MAJOR} or later, and no java was found "
            f"({where}); install a Java {JAVA_MAJOR} runtime (e.g. OpenJDK {JAVA_MAJOR})"
        )
    major = java_major(java)
    if major is None or major < JAVA_MAJOR:
        found = f"Java {major}" if major is not None else "a java whose version is unknown"
        raise InputError(
            f"--engine spark needs Java {JAVA_MAJOR} or later; {java} is {found} "
            f"(set JAVA_HOME to a Java {JAVA_MAJOR} installation)"
        )


class SparkHandle:
    """A SparkSession and the file its JVM writes its log to (None for a session this
    process already had)."""

    def __init__(self, session: Any, log: Path | None) -> None:
        self.session = session
        self.log = log

    @property
    def parallelism(self) -> int:
        return int(self.session.sparkContext.defaultParallelism)


#: The Python daemon of the executors: refracture imported before the workers fork.
DAEMON_MODULE = "refracture.engines.daemon"


def spark_conf(master: str = DEFAULT_MASTER) -> Any:
    """The SparkConf refracture starts Spark with (a ``pyspark.SparkConf``).

    To run refracture in a session of your own (a notebook, a cluster job), start it with
    these settings, above all ``spark.python.daemon.module`` (see
    :mod:`refracture.engines.daemon`).
    """
    from pyspark import SparkConf

    conf = SparkConf().setMaster(master).setAppName("refracture")
    conf.set("spark.python.daemon.module", DAEMON_MODULE)
    conf.set("spark.ui.showConsoleProgress", "false")  # the driver draws its own bar
    conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    conf.set("spark.sql.execution.arrow.pyspark.fallback.enabled", "false")
    if master.startswith("local"):  # a run on this machine: no web server, no network
        conf.set("spark.ui.enabled", "false")
        conf.set("spark.driver.host", "127.0.0.1")
        conf.set("spark.driver.bindAddress", "127.0.0.1")
    return conf


@contextmanager
def spark_session(master: str = DEFAULT_MASTER) -> Iterator[SparkHandle]:
    """The SparkSession this process already runs, or a new one on ``master``, stopped on exit.

    A new session's JVM (and so every executor's Python output) writes to a log file in the
    temporary folder instead of the terminal; the file is removed when the run succeeds. On a
    ``local`` master the executors run this Python (PYSPARK_PYTHON, unless set); on a cluster
    they run what the cluster is configured with, which must have refracture installed.
    """
    require_spark()
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    if SparkContext._active_spark_context is not None:  # e.g. a notebook's or a test's
        yield SparkHandle(SparkSession.builder.getOrCreate(), None)
        return
    if master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    conf = spark_conf(master)
    log = None  # pyspark keeps one JVM per process: a later session's log is the first's
    try:
        gateway = None
        if SparkContext._gateway is None:
            from pyspark.java_gateway import launch_gateway

            log = Path(tempfile.gettempdir()) / f"refracture-spark-{os.getpid()}.log"
            with open(log, "ab") as sink:
                gateway = launch_gateway(conf, popen_kwargs={"stdout": sink, "stderr": sink})
        context = SparkContext(conf=conf, gateway=gateway)
    except Exception as err:  # noqa: BLE001 - pyspark raises several types for a failed start
        where = f" (Spark's log: {log})" if log else ""
        raise InputError(
            f"Spark did not start on master '{master}': {clip(_first_line(err), 200)}{where}"
        ) from None
    session = SparkSession(context)
    try:
        yield SparkHandle(session, log)
    except BaseException:
        session.stop()  # the log stays for a look at what went wrong
        raise
    session.stop()
    if log is not None:
        log.unlink(missing_ok=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def _cause(err: BaseException) -> str:
    """What went wrong in a failed Spark job: the last exception line of the executor's Python
    traceback when there is one (pyspark's message starts with "An exception was thrown from
    the Python worker"), else the first line."""
    lines = [line.strip() for line in str(err).splitlines()]
    raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Exit)\b.*", line)]
    return raised[-1] if raised else _first_line(err)


def _stage_fraction(tracker: Any, group: str) -> float | None:
    done = total = 0
    for job in tracker.getJobIdsForGroup(group):
        info = tracker.getJobInfo(job)
        for stage_id in info.stageIds if info else ():
            stage = tracker.getStageInfo(stage_id)
            if stage is not None:
                done += stage.numCompletedTasks
                total += stage.numTasks
    return done / total if total else None


def run_followed(
    handle: SparkHandle,
    action: Any,
    *,
    progress: Progress | None,
    stage: str,
    total: int,
) -> Any:
    """Run ``action()`` (Spark jobs) and report its finished tasks as ``progress(stage, ...)``.

    Progress is the share of finished tasks of the jobs ``action`` starts, scaled to ``total``
    (patients or rows), polled twice a second. A failed job is a RefractureError naming the
    log; Ctrl-C cancels the jobs.
    """
    context = handle.session.sparkContext
    group = f"refracture-{uuid.uuid4().hex}"
    context.setJobGroup(group, f"refracture: {stage}", interruptOnCancel=True)
    stop = threading.Event()

    def poll() -> None:
        tracker = context.statusTracker()
        last = -1
        while not stop.wait(0.5):
            fraction = _stage_fraction(tracker, group)
            done = min(total - 1, int(total * fraction)) if fraction is not None else 0
            if progress is not None and done > last:
                progress(stage, max(done, 0), total)
                last = done

    thread = threading.Thread(target=poll, name="refracture-spark-progress", daemon=True)
    if progress is not None:
        progress(stage, 0, total)
        thread.start()
    try:
        with warnings.catch_warnings():  # pyspark's advice on Arrow and pandas: not for users
            warnings.filterwarnings("ignore", category=UserWarning, module=r"pyspark(\.|$)")
            result = action()
    except KeyboardInterrupt:
        context.cancelJobGroup(group)
        raise
    except RefractureError:
        raise
    except Exception as err:  # noqa: BLE001 - Py4J and pyspark errors of a failed job
        where = f" (Spark's log: {handle.log})" if handle.log else ""
        raise RefractureError(
            f"the Spark job ({stage}) failed: {clip(_cause(err), 300)}{where}"
        ) from None
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        context.setLocalProperty("spark.jobGroup.id", None)
    if progress is not None:
        progress(stage, total, total)
    return result
