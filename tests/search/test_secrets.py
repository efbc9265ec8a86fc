"""No credential on disk or on the terminal (issue 17 item 4): a `--storage` URL's password, a key.ini token
and chat id never appear in any file of the run and search trees (TensorBoard events included) or in
the output; PGPASSWORD and .pgpass give libpq the password without it ever being on the command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from streamseg.cli.main import main

from ..conftest import streamseg
from ..integrations.fake_telegram import FakeTelegram
from .pg_server import PASSWORD, postgres_password_server  # noqa: F401  (fixture)

TINY_EXP = str(Path(__file__).with_name("mstcn_tiny.py"))
TOKEN = "123456789:AAH-fake-SECRET-token_0123456789abcdefg"
CHAT = "-1009876543217"


@pytest.mark.parametrize("text, shown", [
    ("postgresql://user:pa%40ss:w@db:5432/optuna", "postgresql://user:***@db:5432/optuna"),
    ("--storage=postgresql+psycopg2://u:pw@h/db done", "--storage=postgresql+psycopg2://u:***@h/db done"),
    ("mysql+pymysql://root:hunter2@127.0.0.1/x?charset=utf8", "mysql+pymysql://root:***@127.0.0.1/x?charset=utf8"),
    ("postgresql://u@h/db?sslmode=require&password=hunter2", "postgresql://u@h/db?sslmode=require&password=***"),
    (f"bot{TOKEN}/getMe", "bot***/getMe"),
    ("postgresql://u@h/db sqlite:///tmp/study.db journal:/a.journal", None),  # nothing secret: unchanged
])
def test_redact_hides_passwords_and_tokens_and_nothing_else(text, shown):
    from streamseg.config import redact

    assert redact(text) == (text if shown is None else shown)


def _files_holding(root: Path, secrets: list[str]) -> list[str]:
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        found += [f"{path}: {s}" for s in secrets if s.encode() in data]
    return found


def test_search_never_writes_or_prints_a_credential(postgres_password_server, tmp_path, synth_root, capsys,
                                                    monkeypatch):
    url = postgres_password_server.replace("postgres@", f"postgres:{PASSWORD}@")
    root = tmp_path / "experiments"
    args = ["search", "-D", "synth", "-M", "mstcn", "-E", TINY_EXP, "-R", str(root), "-o", f"data.root={synth_root}",
            "-o", "train.epochs=1", "--study", "s", "--trials", "1", "--pruner", "none"]
    secrets = [PASSWORD, TOKEN, TOKEN.split(":")[1], CHAT]
    with FakeTelegram() as telegram:
        keys = tmp_path / "key.ini"
        keys.write_text(f"[Telegram0]\ntoken = {TOKEN}\nchat_id = {CHAT}\napi_url = {telegram.url}\n")
        out = streamseg(*args, "--storage", url, "-B", "0", "--telegram-keys", str(keys), env={"COLUMNS": "200"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert any(c.method == "sendMessage" for c in telegram.calls)  # the key.ini was used
    assert "postgresql+psycopg2://postgres:***@127.0.0.1" in out.stdout  # the storage is named, redacted

    # the same study with the password from the environment (libpq's PGPASSWORD), then from a .pgpass file
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    assert main([*args, "--storage", postgres_password_server, "--report"]) == 0
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    host, port = postgres_password_server.split("@", 1)[1].split("/", 1)[0].split(":")
    pgpass.write_text(f"{host}:{port}:optuna:postgres:{PASSWORD}\n")
    pgpass.chmod(0o600)  # libpq ignores a .pgpass that others can read
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    assert main([*args, "--storage", postgres_password_server, "--report"]) == 0
    reported = capsys.readouterr()
    assert "1 of 1" in reported.out or "complete" in reported.out.lower(), reported.out[-2000:]
    # without any password the server refuses: one line, no password, no traceback
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(SystemExit) as refused:
        main([*args, "--storage", postgres_password_server, "--report"])
    message = str(refused.value.code)
    assert message.startswith("error: --storage ") and "password" in message and "\n" not in message, message
    pgpass.unlink()

    run_json = sorted(root.rglob("run.json"))
    assert run_json and all("postgresql://postgres:***@127.0.0.1" in " ".join(json.loads(p.read_text())["command"])
                            for p in run_json)  # the command is recorded, its password hidden
    assert list(root.rglob("events.out.tfevents.*"))  # TensorBoard's files are among those searched
    text = out.stdout + out.stderr + reported.out + reported.err + message
    leaks = [s for s in secrets if s in text] + _files_holding(root, secrets)  # the run and search trees
    assert leaks == []
