"""A throwaway PostgreSQL server on 127.0.0.1 for the search tests (Debian's `postgresql` package).

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user via `runuser`.
Skipped, with the reason, where the server binaries or psycopg2 are absent, unless
STREAMSEG_REQUIRE_POSTGRES is set (CI): then that fails the test."""

from __future__ import annotations

import contextlib
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
    with _server(password=None) as url:
        yield url


PASSWORD = "pg-Secret-4e1d9b"  # what postgres_password_server requires


@pytest.fixture(scope="module")
def postgres_password_server():
    """`postgresql://postgres@127.0.0.1:<port>/optuna` (no password in it) on a server that requires
    `PASSWORD` (scram-sha-256 on every connection, loopback included); the server stops afterwards."""
    with _server(password=PASSWORD) as url:
        yield url


@contextlib.contextmanager
def _server(password: str | None):
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
    auth = ["-A", "trust"]
    env = dict(os.environ)
    if password is not None:
        secret_dir = tempfile.mkdtemp(prefix="streamseg-pgpw-")
        pwfile = os.path.join(secret_dir, "pw")
        with open(pwfile, "w") as f:
            f.write(password + "\n")
        auth = ["-A", "scram-sha-256", f"--pwfile={pwfile}"]
        env["PGPASSWORD"] = password  # for createdb below
    if as_root:
        shutil.chown(data, "postgres", "postgres")
        if password is not None:
            for path in (secret_dir, pwfile):
                shutil.chown(path, "postgres", "postgres")
    port = _free_port()

    def run(*cmd: str) -> None:
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, timeout=120, env=env)

    try:
        run(f"{bin_dir}/initdb", "-D", data, *auth, "-U", "postgres", "--no-sync")
    finally:
        if password is not None:
            shutil.rmtree(secret_dir, ignore_errors=True)
    run(f"{bin_dir}/pg_ctl", "-D", data, "-l", f"{data}/server.log", "-w", "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
    try:
        run(f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "optuna")
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*prefix, f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], capture_output=True,
                       timeout=120)
        shutil.rmtree(data, ignore_errors=True)
