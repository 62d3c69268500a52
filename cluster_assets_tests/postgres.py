"""A throwaway PostgreSQL server for the tests: Debian's binaries, a temporary data folder, a loopback port.

``initdb`` and ``postgres`` refuse to run as root, so as root they run as the ``postgres`` user
(``runuser``). Trust authentication on 127.0.0.1 only; the server is stopped and its folder removed
at the end of the session.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def find_bin_dir() -> Path | None:
    """The newest installed server's bin folder ($CLUSTER_ASSETS_PG_BIN first), or None."""
    wanted = os.environ.get("CLUSTER_ASSETS_PG_BIN")
    candidates = [wanted] if wanted else sorted(glob.glob(PG_BIN_GLOB), key=lambda p: int(p.split("/")[-2]))[::-1]
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bin_dir: Path
    data: Path
    port: int
    user: str = "postgres"
    host: str = "127.0.0.1"

    def _as_owner(self) -> list[str]:
        return ["runuser", "-u", self.user, "--"] if os.geteuid() == 0 else []

    def _run(self, *args: str, timeout: float = 60) -> None:
        done = subprocess.run([*self._as_owner(), *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stderr[-2000:] or done.stdout[-2000:]}")

    def start(self) -> "PostgresServer":
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data / "db"), "-U", self.user, "--auth=trust",
                  "--no-sync", "-E", "UTF8")
        options = (f"-c listen_addresses={self.host} -p {self.port} -k {self.data} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data / "db"), "-o", options, "-w", "-t", "60",
                  "-l", str(self.data / "server.log"), "start", timeout=90)
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data / "db"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.data, ignore_errors=True)

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return name

    def url(self, db_name: str) -> str:
        # psycopg2's scheme: with SQLAlchemy 2 a bare postgresql:// picks psycopg 3
        return f"postgresql+psycopg2://{self.user}@{self.host}:{self.port}/{db_name}"


def start_server() -> PostgresServer | str:
    """A started server, or why there is none (the reason a test skips with)."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        return (f"no PostgreSQL server binaries under {PG_BIN_GLOB} (apt-get install postgresql; "
                "or set CLUSTER_ASSETS_PG_BIN): the production-instance tests need a real server")
    try:
        owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
    except KeyError:
        return "running as root and there is no 'postgres' user to run PostgreSQL as"
    data = Path(tempfile.mkdtemp(prefix="cluster-assets-pg-"))
    if owner is not None:
        os.chown(data, owner.pw_uid, owner.pw_gid)
    data.chmod(0o700)
    server = PostgresServer(bin_dir, data, _free_port())
    started = time.monotonic()
    try:
        server.start()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(data, ignore_errors=True)
        return f"PostgreSQL did not start: {exc}"
    server.startup_s = time.monotonic() - started
    return server
