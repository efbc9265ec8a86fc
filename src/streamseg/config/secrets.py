"""Credentials never reach a file, a log line or the terminal: `redact` is applied to what the package
records or prints that may hold one (the recorded command line, storage URLs, error messages).

What is hidden:
* the password of a URL (`postgresql://user:PASSWORD@host/db` -> `postgresql://user:***@host/db`);
* credential query parameters (`?password=...`, `&token=...`, `sslpassword`, `api_key`, `secret`);
* anything shaped like a Telegram bot token (`<bot id>:<35 characters>`);
* every value registered with `remember_secret` (the package registers what it reads from `key.ini` or
  the Telegram environment variables), in the process that read it.

Better than a password on the command line: `PGPASSWORD` or a `.pgpass` file (libpq reads both; see
docs/search.md), which nothing here ever sees.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

MASK = "***"

_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:)(?P<secret>[^@\s/]*)(?=@)")
_QUERY_SECRET = re.compile(r"(?P<head>[?&;\s](?:password|passwd|pwd|sslpassword|token|secret|api_key|apikey)=)"
                           r"(?P<secret>[^&;\s]+)", re.IGNORECASE)
_BOT_TOKEN = re.compile(r"(?<![0-9])\d{6,}:[A-Za-z0-9_-]{30,}")  # also inside .../bot<token>/getMe

_remembered: set[str] = set()


def remember_secret(value: str | None) -> None:
    """Hide ``value`` (and its URL-quoted forms) in everything `redact` sees from now on, in this process.
    Values shorter than 4 characters are ignored: they would also match innocent text."""
    if value and len(value.strip()) >= 4:
        value = value.strip()
        _remembered.update({value, quote(value, safe=""), quote(value)})


def redact(text: str) -> str:
    """``text`` with every credential described in the module docstring replaced by ``***``."""
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    text = _QUERY_SECRET.sub(lambda m: m.group("head") + MASK, text)
    text = _BOT_TOKEN.sub(MASK, text)
    for value in sorted(_remembered, key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


def redact_all(items: Iterable[str]) -> list[str]:
    """`redact` of each item (e.g. a command line to record)."""
    return [redact(str(item)) for item in items]
