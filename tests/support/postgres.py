"""A throwaway PostgreSQL server for tests and benchmarks: initdb and pg_ctl from Debian's
``postgresql`` package, a cluster in a temporary folder on a free loopback port, removed at the end.

PostgreSQL refuses to run as root, so under root the cluster belongs to (and runs as) the
``postgres`` system user the package creates, or ``nobody``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from tests.support.processes import free_port

SUPERUSER = "berth"


def find_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin that has initdb and pg_ctl, if any."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0
    )
    for path in reversed(candidates):
        if os.access(f"{path}/initdb", os.X_OK) and os.access(f"{path}/pg_ctl", os.X_OK):
            return Path(path)
    return None


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
            return user
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


@dataclass
class PostgresCluster:
    bin_dir: Path
    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="berth-pg-")))
    user: str | None = field(default_factory=_run_as)

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str | Path, timeout: float = 120) -> None:
        result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, user=self.user, cwd=self.root)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> PostgresCluster:
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(self.bin_dir / "initdb", "-D", self.data, "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.root} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(self.bin_dir / "pg_ctl", "-D", self.data, "-o", options, "-l", self.root / "server.log", "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(self.bin_dir / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", timeout=60)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    with engine.connect() as conn:
                        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
                    break
                except sa.exc.OperationalError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
        finally:
            engine.dispose()
        return self.url(name)
