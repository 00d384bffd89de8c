"""Real servers for tests: a throwaway PostgreSQL cluster and an ``mlflow server`` on it.

PostgreSQL refuses to run as root, so when the tests run as root the cluster belongs to a
dedicated unprivileged system user (created if missing). Everything lives in a temporary
folder, listens on 127.0.0.1 on a free port and is removed at the end.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PG_USER = "refracture-pg"  # the system user owning the cluster when tests run as root
DB_USER = "refracture"  # the cluster's superuser role
DB_NAME = "mlflow"


def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, else the highest of
    /usr/lib/postgresql/<version>/bin; None when PostgreSQL's server binaries are absent."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return versions[-1].parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_owner(cmd: list[str]) -> list[str]:
    """Run ``cmd`` as the cluster owner: ourselves, or PG_USER when we are root."""
    if os.geteuid() != 0:
        return cmd
    return ["runuser", "-u", PG_USER, "--", *cmd]


def _ensure_pg_user() -> None:
    if os.geteuid() != 0:
        return
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(["useradd", "-r", "-M", "-s", "/usr/sbin/nologin", PG_USER], check=True)


@dataclass
class Postgres:
    port: int
    folder: Path

    @property
    def sqlalchemy_uri(self) -> str:
        """For ``mlflow server --backend-store-uri`` (psycopg 3 driver)."""
        return f"postgresql+psycopg://{DB_USER}@127.0.0.1:{self.port}/{DB_NAME}"


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL cluster with an empty database ``mlflow`` (trust auth, 127.0.0.1)."""
    import psycopg

    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    _ensure_pg_user()
    folder = Path(tempfile.mkdtemp(prefix="refracture-pg-"))  # not under root's 0700 tmp
    data, log = folder / "data", folder / "postgres.log"
    if os.geteuid() == 0:
        pg = pwd.getpwnam(PG_USER)
        os.chown(folder, pg.pw_uid, pg.pw_gid)
    port = free_port()
    pg_ctl = [str(bin_dir / "pg_ctl"), "-D", str(data)]
    started = False
    try:
        subprocess.run(
            _as_owner(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    DB_USER,
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-instructions",
                ]  # fmt: skip
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        opts = f"-p {port} -h 127.0.0.1 -k {folder} -F"
        subprocess.run(
            _as_owner([*pg_ctl, "-o", opts, "-l", str(log), "-w", "-t", "120", "start"]),
            check=True,
            capture_output=True,
            timeout=180,
        )
        started = True
        conninfo = f"host=127.0.0.1 port={port} user={DB_USER} dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB_NAME}")
        yield Postgres(port, folder)
    finally:
        if started:
            subprocess.run(
                _as_owner([*pg_ctl, "-m", "fast", "-w", "stop"]), capture_output=True, timeout=120
            )
        shutil.rmtree(folder, ignore_errors=True)


@dataclass
class MlflowServer:
    url: str
    artifacts: Path
    log: Path


@contextlib.contextmanager
def mlflow_server(
    backend_store_uri: str, folder: Path, *, workers: int = 2, timeout: float = 240
) -> Iterator[MlflowServer]:
    """``mlflow server`` on the backend store, artifacts proxied into ``folder/artifacts``."""
    port = free_port()
    artifacts, log_path = folder / "artifacts", folder / "mlflow-server.log"
    artifacts.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent  # mlflow starts uvicorn from the same environment
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", str(artifacts),
        "--serve-artifacts",
        "--host", "127.0.0.1", "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip
    log = log_path.open("w")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited ({proc.returncode}): {log_path.read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {timeout:.0f} s")
            time.sleep(1)
        yield MlflowServer(url, artifacts, log_path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn workers
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()
