"""A throwaway PostgreSQL server on 127.0.0.1 for the search tests (Debian's `postgresql` package).

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user via `runuser`.
Skipped, with the reason, where the server binaries or psycopg2 are absent, unless
STREAMSEG_REQUIRE_POSTGRES is set (CI): then that fails the test."""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile

import pytest


def _bin_dir() -> str | None:
    initdb = shutil.which("initdb")
    if initdb:
        return os.path.dirname(os.path.realpath(initdb))
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_server():
    """`postgresql://postgres@127.0.0.1:<port>/optuna`, a fresh database; the server stops afterwards."""
    # set by .ci/run: there a missing driver or server is a failure, not a skip
    required = bool(os.environ.get("STREAMSEG_REQUIRE_POSTGRES"))
    why = None
    if importlib.util.find_spec("psycopg2") is None:
        why = "psycopg2 (psycopg2-binary) is needed for PostgreSQL storage: pip install -e '.[search]'"
    bin_dir = _bin_dir()
    if why is None and bin_dir is None:
        why = "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install -y postgresql"
    if why is not None:
        if required:
            pytest.fail(f"STREAMSEG_REQUIRE_POSTGRES is set: {why}")
        pytest.skip(why)
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    data = tempfile.mkdtemp(prefix="streamseg-pg-")  # under /tmp: the postgres user must reach it
    if as_root:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120)

    run(f"{bin_dir}/initdb", "-D", data, "-A", "trust", "-U", "postgres", "--no-sync")
    run(f"{bin_dir}/pg_ctl", "-D", data, "-l", f"{data}/server.log", "-w", "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        run(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna")
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*prefix, f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], capture_output=True,
                       timeout=120)
        shutil.rmtree(data, ignore_errors=True)
