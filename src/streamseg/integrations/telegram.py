"""Telegram progress reports: credentials, and the entry points the CLI calls.

    streamseg train ... -B 0        # reports to the bot and chat of [Telegram0] in tools/key.ini

Credentials, looked up in this order (docs/telegram.md):
1. `tools/key.ini` (git-ignored; copy `tools/key.ini.template`), section `[Telegram<N>]` picked by `-B N`,
   keys `token`, `chat_id` and optional `api_url`. A relative key file path is looked for in the current
   directory, then in the streamseg checkout.
2. Environment variables, when the key file or its section is missing:
   STREAMSEG_TELEGRAM_TOKEN, STREAMSEG_TELEGRAM_CHAT_ID, and optional STREAMSEG_TELEGRAM_API_URL.
The Bot API URL (for a self-hosted Bot API server) is the `api_url` argument, else the section's
`api_url`, else STREAMSEG_TELEGRAM_API_URL, else api.telegram.org.

Missing or incomplete credentials, or python-telegram-bot not installed: one warning (rank 0 only), no
callback, and training goes on. The token is never printed: messages name the file and section only.
"""

from __future__ import annotations

import configparser
import importlib.util
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..config.secrets import remember_secret
from .telegram_sender import INSTALL_HINT, TelegramCredentials, TelegramNotifier

if TYPE_CHECKING:
    import pytorch_lightning as pl

log = logging.getLogger("streamseg.telegram")

ENV_TOKEN = "STREAMSEG_TELEGRAM_TOKEN"
ENV_CHAT_ID = "STREAMSEG_TELEGRAM_CHAT_ID"
ENV_API_URL = "STREAMSEG_TELEGRAM_API_URL"
DEFAULT_KEY_FILE = "tools/key.ini"
_CHECKOUT = Path(__file__).resolve().parents[3]  # src/streamseg/integrations/telegram.py -> the repository


class CredentialsError(ValueError):
    """The key file or environment names a bot but something is missing or malformed; the message says
    which file, section and key (never the token)."""


def _key_file_path(key_file: str | Path) -> Path | None:
    path = Path(key_file).expanduser()
    if path.is_file():
        return path
    if not path.is_absolute() and (_CHECKOUT / path).is_file():
        return _CHECKOUT / path
    return None


def load_credentials(
    section_index: int,
    key_file: str | Path = DEFAULT_KEY_FILE,
    api_url: str | None = None,
    environ: dict[str, str] | None = None,
) -> TelegramCredentials | None:
    """Credentials of bot `section_index` (`[Telegram<N>]` in `key_file`), else from the environment.

    Returns None when neither has any; raises `CredentialsError` when one is incomplete or malformed."""
    env = os.environ if environ is None else environ
    section = f"Telegram{section_index}"
    path = _key_file_path(key_file)
    if path is not None:
        parser = configparser.ConfigParser(interpolation=None)  # a '%' in a token must stay a '%'
        try:
            parser.read(path, encoding="utf-8")
        except configparser.Error as e:
            # name the file and line only: configparser's own message quotes the line, which may hold the token
            raise CredentialsError(f"{path}: cannot parse ({type(e).__name__}) at line(s) {_error_lines(e)}") from None
        if parser.has_section(section):
            values = parser[section]
            missing = [k for k in ("token", "chat_id") if not values.get(k, "").strip()]
            if missing:
                raise CredentialsError(f"{path} [{section}]: missing {', '.join(missing)} (expected token = <bot token>, "
                                       "chat_id = <chat id>)")
            remember_secret(values["token"])  # hidden from then on in run.json, messages, logs
            remember_secret(values["chat_id"])
            return TelegramCredentials(
                token=values["token"].strip(),
                chat_id=values["chat_id"].strip(),
                api_url=api_url or values.get("api_url", "").strip() or env.get(ENV_API_URL) or None,
                source=f"{path} [{section}]",
            )
    token, chat_id = env.get(ENV_TOKEN, "").strip(), env.get(ENV_CHAT_ID, "").strip()
    if token or chat_id:
        if not (token and chat_id):
            missing = ENV_CHAT_ID if token else ENV_TOKEN
            raise CredentialsError(f"environment: {missing} is not set (both {ENV_TOKEN} and {ENV_CHAT_ID} are needed)")
        remember_secret(token)
        remember_secret(chat_id)
        return TelegramCredentials(token, chat_id, api_url or env.get(ENV_API_URL) or None, source="environment")
    return None


def _error_lines(e: configparser.Error) -> str:
    lines = [str(n) for n, _ in getattr(e, "errors", [])] or [str(getattr(e, "lineno", "?"))]
    return ", ".join(lines)


def _is_rank_zero() -> bool:
    """Rank 0 of a launched job (before any process group exists), as Lightning decides it."""
    from pytorch_lightning.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0


def telegram_notifier_from_cli(
    section_index: int | None,
    key_file: str | Path = DEFAULT_KEY_FILE,
    api_url: str | None = None,
) -> TelegramNotifier | None:
    """A notifier for `-B N`, or None (with one warning on rank 0) when N is None, credentials are missing
    or python-telegram-bot is not installed. For search loops: call `notifier.search_progress(...)`."""
    if section_index is None:
        return None
    warn = log.warning if _is_rank_zero() else log.debug
    if importlib.util.find_spec("telegram") is None:
        warn("Telegram reports were asked for (-B %d) but python-telegram-bot is not installed; training goes on "
             "without them. Install it: %s", section_index, INSTALL_HINT)
        return None
    try:
        creds = load_credentials(section_index, key_file, api_url)
    except CredentialsError as e:
        warn("Telegram reports disabled: %s; training goes on without them", e)
        return None
    if creds is None:
        warn("Telegram reports disabled: no [Telegram%d] section in %s and no %s / %s in the environment "
             "(see tools/key.ini.template); training goes on without them",
             section_index, key_file, ENV_TOKEN, ENV_CHAT_ID)
        return None
    return TelegramNotifier(creds)


def telegram_callback_from_cli(
    section_index: int | None,
    key_file: str | Path = DEFAULT_KEY_FILE,
    api_url: str | None = None,
    every_n_epochs: int = 10,
    preview: bool = True,
) -> "pl.Callback | None":
    """The Lightning callback for `-B N` (reports every `every_n_epochs` epochs; `preview`: the input preview
    at the start of training), or None as above.

    Safe to call on every DDP rank: nothing connects or starts a thread until rank 0 sends."""
    notifier = telegram_notifier_from_cli(section_index, key_file, api_url)
    if notifier is None:
        return None
    from .telegram_callback import TelegramCallback

    return TelegramCallback(notifier, every_n_epochs=every_n_epochs, preview=preview)


__all__ = [
    "ENV_API_URL", "ENV_CHAT_ID", "ENV_TOKEN", "CredentialsError", "TelegramCredentials", "TelegramNotifier",
    "load_credentials", "telegram_callback_from_cli", "telegram_notifier_from_cli",
]
