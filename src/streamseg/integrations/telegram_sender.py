"""`TelegramNotifier`: sends messages and photos from a background thread, so training never waits on Telegram.

    training thread                          worker thread (daemon, its own asyncio event loop)
    notifier.send(text)  -- put_nowait -->   bounded queue --> Bot.send_message / send_photo
      returns at once; False when the          timeouts, retries with back-off, Telegram's retry_after,
      queue is full (the message is dropped)   4,096-character split, HTML with a plain-text fallback

python-telegram-bot's `Bot` is async-only and one `Bot` must not outlive its event loop, so the worker
owns both: it creates the loop, then the `Bot` inside it, and shuts both down when it stops. It starts
on the first message, not at construction, so building a notifier on every DDP rank costs nothing.

Guarantees:
* `send` / `photo` never block and never raise (a full queue drops the message and counts it).
* Every Telegram or network error is caught in the worker; a rejected token or forbidden chat disables
  the notifier (one warning) instead of failing every later message.
* `close(timeout)` returns within about `timeout` + 1 s: queued messages get until the deadline, then the
  worker is cancelled (an in-flight request is abandoned).
* The token is never logged, never put in an exception message we raise, never in a message sent, and
  never held by an object whose repr could print it (`Bot.__repr__` prints it: the Bot stays local to the
  worker coroutine). Log records from httpx and python-telegram-bot are redacted (`_RedactFilter`).
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import logging
import os
import queue
import threading
import time
import warnings
from typing import Any, Callable

from .telegram_text import CAPTION_LIMIT, escape, html_to_text, redact, split_message, truncate

log = logging.getLogger("streamseg.telegram")

PhotoSource = bytes | Callable[[], bytes | None]  # PNG bytes, or a function the worker calls to render them

INSTALL_HINT = "pip install 'streamseg[telegram]' (python-telegram-bot>=22,<23)"


@dataclasses.dataclass(frozen=True)
class TelegramCredentials:
    """Where to send: a bot token, a chat id, and the Bot API base URL (None: api.telegram.org).

    The token is excluded from repr, so printing the object (a traceback's locals, a debugger) hides it."""

    token: str = dataclasses.field(repr=False)
    chat_id: str
    api_url: str | None = None
    source: str = ""  # where they came from, for messages: "tools/key.ini [Telegram0]" or "environment"


@dataclasses.dataclass
class _Item:
    kind: str  # "text" | "photo" | "animation"
    text: str = ""
    html: bool = True
    photo: PhotoSource | None = None
    filename: str = "plot.png"


class _Disabled(Exception):
    """The token or chat was rejected: no later message can succeed."""


class _Expired(Exception):
    """`close()`'s deadline passed while a message was still waiting to be retried."""


def bot_urls(api_url: str | None) -> dict[str, str]:
    """`Bot(base_url=..., base_file_url=...)` keyword arguments for a Bot API server URL.

    Accepts the server root (`http://localhost:8081`), the root with `/bot` (python-telegram-bot's own
    convention: the token is appended), or a URL with a `{token}` placeholder; None is api.telegram.org."""
    if not api_url:
        return {}
    url = api_url.rstrip("/")
    if "{token}" in url:
        return {"base_url": url}
    root = url[: -len("/bot")] if url.endswith("/bot") else url
    return {"base_url": root + "/bot", "base_file_url": root + "/file/bot"}


class _RedactFilter(logging.Filter):
    """Replaces the token in log records of the HTTP and Telegram libraries (httpx logs every request URL at
    INFO, and the URL holds the token; python-telegram-bot logs its base URL at DEBUG)."""

    def __init__(self, secret: str):
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler to complain
            return True
        clean = redact(message, self.secret)
        if clean != message:
            record.msg, record.args = clean, None
        return True


# Loggers that see request URLs. A logger's filters only apply to records created on that logger (not to
# those propagated from children), so every emitting logger is listed, not just the package roots.
_LIBRARY_LOGGERS = (
    "httpx", "httpcore", "httpcore.connection", "httpcore.http11", "httpcore.http2", "httpcore.proxy",
    "telegram", "telegram.Bot", "telegram.ext", "telegram.request", "telegram.request.BaseRequest",
    "telegram.request.HTTPXRequest",
)
_installed_filters: set[str] = set()
_filters_lock = threading.Lock()


def install_log_redaction(secret: str) -> None:
    """Redact `secret` from the library loggers above (idempotent; the filters stay for the process)."""
    with _filters_lock:
        if secret in _installed_filters:
            return
        _installed_filters.add(secret)
        f = _RedactFilter(secret)
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).addFilter(f)


class TelegramNotifier:
    """Queue messages for a Telegram chat; a background thread delivers them.

    Args:
        credentials: token, chat id, optional Bot API URL.
        max_queue: messages waiting at most; more are dropped (a photo is ~50-200 kB, so 100 cost <= 20 MB).
        connect_timeout / read_timeout: seconds per HTTP request; media_timeout: seconds to upload a photo.
        max_attempts: tries per request (network errors, timeouts, HTTP 5xx and 429 are retried).
        backoff: seconds before the 2nd try, doubled each further try (1, 2, 4 s with the defaults).
        max_wait: cap in seconds on one wait, including a server-requested `retry_after`.
    """

    def __init__(
        self,
        credentials: TelegramCredentials,
        *,
        max_queue: int = 100,
        connect_timeout: float = 5.0,
        read_timeout: float = 10.0,
        media_timeout: float = 30.0,
        max_attempts: int = 4,
        backoff: float = 1.0,
        max_wait: float = 60.0,
    ):
        if max_queue < 1 or max_attempts < 1:
            raise ValueError(f"TelegramNotifier: max_queue and max_attempts must be >= 1, got {max_queue}, {max_attempts}")
        self._creds = credentials
        self._chat_id = credentials.chat_id
        self._max_queue = max_queue
        self._timeouts = (connect_timeout, read_timeout, media_timeout)
        self._max_attempts, self._backoff, self._max_wait = max_attempts, backoff, max_wait
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Item] | None = None
        self._stop: threading.Event | None = None  # set by close(): finish what is queued, then stop
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._pid = os.getpid()
        self._deadline: float | None = None  # monotonic time after which queued messages are given up
        self._disabled = False
        self._warned = False
        self.stats = {"sent": 0, "failed": 0, "dropped": 0}  # messages (a split message counts once)

    def __repr__(self) -> str:
        return f"TelegramNotifier(chat_id={self._chat_id!r}, source={self._creds.source!r})"

    # ------------------------------------------------------------------ public, called from training
    @property
    def enabled(self) -> bool:
        return not self._disabled

    def send(self, text: str, html: bool = True) -> bool:
        """Queue a text message (HTML parse mode unless `html=False`); split when longer than 4,096.

        Returns False when it was dropped (queue full, notifier disabled or closing). Never blocks."""
        return self._put(_Item("text", text=text, html=html))

    def photo(self, png: PhotoSource, caption: str = "", filename: str = "plot.png") -> bool:
        """Queue a photo: PNG bytes, or a function returning them (called in the worker thread, so plots can be
        rendered off the training thread; None from it skips the photo). `caption` is plain text, cut to
        1,024 characters."""
        return self._put(_Item("photo", text=caption, html=False, photo=png, filename=filename))

    def animation(self, gif: PhotoSource, caption: str = "", filename: str = "preview.gif") -> bool:
        """Queue an animation (sendAnimation: a GIF, or an mp4 without sound), as `photo` does a picture:
        bytes, or a function returning them in the worker thread."""
        return self._put(_Item("animation", text=caption, html=False, photo=gif, filename=filename))

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued within `timeout` seconds, then stop the worker. Safe to call twice; a
        later `send` starts a fresh worker."""
        with self._lock:
            thread, stop = self._thread, self._stop
            if thread is None or stop is None or os.getpid() != self._pid:
                return
            self._deadline = time.monotonic() + max(0.0, timeout)
            stop.set()
        thread.join(timeout)
        if thread.is_alive():  # past the deadline: abandon the in-flight request
            loop, task = self._loop, self._task
            if loop is not None and task is not None:
                try:
                    loop.call_soon_threadsafe(task.cancel)
                except RuntimeError:  # the loop closed in the meantime
                    pass
            thread.join(1.0)
        with self._lock:
            self._thread, self._queue, self._stop = None, None, None
            self._loop, self._task, self._deadline = None, None, None
        atexit.unregister(self._close_at_exit)
        lost = self.stats["failed"] + self.stats["dropped"]
        if lost:
            log.warning("Telegram: %d message(s) sent, %d not delivered (see the warning above for the reason)",
                        self.stats["sent"], lost)

    def search_progress(
        self,
        study: str,
        trials_done: int,
        n_trials: int | None,
        metric: str,
        best_value: float | None,
        best_trial: int | None,
        best_params: dict[str, Any],
        finished: bool = False,
    ) -> bool:
        """Queue a hyper-parameter search report: trials done, the best trial so far and its overrides.

        A search loop calls this every N trials (and with `finished=True` at the end); `best_params` are the
        best trial's dotted overrides, so the message shows how to re-run it."""
        head = "search finished" if finished else "search progress"
        total = f"/{n_trials}" if n_trials else ""
        lines = [f"<b>{escape(head)}: {escape(study)}</b>", f"trials: {trials_done}{total}"]
        if best_value is None:
            lines.append("no completed trial yet")
        else:
            lines.append(f"best {escape(metric)} = {best_value:.4g} (trial {best_trial})")
            if best_params:
                lines.append("<pre>" + escape("\n".join(f"-o {k}={v}" for k, v in best_params.items())) + "</pre>")
        return self.send("\n".join(lines))

    def redact(self, text: str) -> str:
        """`text` with the token hidden (for callers that log errors which might quote it)."""
        return redact(text, self._creds.token)

    # ------------------------------------------------------------------ queueing
    def _put(self, item: _Item) -> bool:
        if self._disabled or os.getpid() != self._pid:
            return False
        try:
            with self._lock:
                if self._deadline is not None:  # closing
                    raise queue.Full
                self._ensure_worker()
                assert self._queue is not None
                self._queue.put_nowait(item)
            return True
        except queue.Full:
            self.stats["dropped"] += 1
            self._warn_once("Telegram: message queue full or closing; dropping messages (training goes on)")
            return False
        except Exception as e:  # e.g. no threads left: reporting must never break training
            self.stats["dropped"] += 1
            self._warn_once(f"Telegram: cannot queue a message: {type(e).__name__}: {redact(str(e), self._creds.token)}")
            return False

    def _ensure_worker(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._queue = queue.Queue(maxsize=self._max_queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._queue, self._stop), name="streamseg-telegram",
                                        daemon=True)
        self._thread.start()
        atexit.register(self._close_at_exit)

    def _close_at_exit(self) -> None:
        self.close(timeout=5.0)  # the interpreter is exiting: a short, bounded flush

    def _warn_once(self, message: str) -> None:
        if self._warned:
            log.debug(message)
            return
        self._warned = True
        log.warning(message)

    # ------------------------------------------------------------------ worker thread
    def _run(self, q: queue.Queue[_Item], stop: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            asyncio.set_event_loop(loop)
            self._task = loop.create_task(self._main(q, stop))
            loop.run_until_complete(self._task)
        except BaseException as e:  # cancelled by close(), or a bug: never let it reach threading.excepthook
            if not isinstance(e, asyncio.CancelledError):
                log.warning("Telegram: sender stopped: %s: %s", type(e).__name__, redact(str(e), self._creds.token))
        finally:
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            except BaseException:
                pass
            loop.close()

    async def _main(self, q: queue.Queue[_Item], stop: threading.Event) -> None:
        try:
            import telegram
            from telegram.request import HTTPXRequest
        except ImportError:
            self._disabled = True
            self._warn_once(f"Telegram: python-telegram-bot is not installed; no reports. Install it: {INSTALL_HINT}")
            self._drain(q)
            return
        install_log_redaction(self._creds.token)  # before Bot() logs its URL
        _quiet_retry_after_deprecation()
        connect, read, media = self._timeouts
        request = HTTPXRequest(connect_timeout=connect, read_timeout=read, write_timeout=read,
                               pool_timeout=connect, media_write_timeout=media)
        bot = telegram.Bot(self._creds.token, request=request, **bot_urls(self._creds.api_url))
        try:
            await bot.initialize()  # getMe: checks the token; request objects are initialised before it
        except telegram.error.InvalidToken:
            self._disable("Telegram: the bot token was rejected by the server; no reports (check "
                          f"{self._creds.source or 'the credentials'})")
        except telegram.error.TelegramError as e:
            # server down or slow: keep going, each message retries on its own
            self._warn_once(f"Telegram: cannot reach the Bot API ({self._error(e)}); will keep trying")
        try:
            while True:
                item = await self._next(q, stop)
                if item is None:
                    return
                if self._disabled:
                    self.stats["dropped"] += 1
                    continue
                try:
                    await self._deliver(bot, item)
                    self.stats["sent"] += 1
                except _Disabled:
                    self.stats["failed"] += 1
                except _Expired:
                    self.stats["dropped"] += 1
                except Exception as e:  # a message that cannot be delivered: drop it, keep serving
                    self.stats["failed"] += 1
                    self._warn_once(f"Telegram: a message was not delivered ({self._error(e)}); training goes on")
        finally:
            try:
                await bot.shutdown()
            except Exception:
                pass

    async def _next(self, q: queue.Queue[_Item], stop: threading.Event) -> _Item | None:
        """The next queued item, or None once the queue is empty and `stop` is set. Polls (every 20 ms)
        rather than blocking in an executor thread: an executor thread stuck on `q.get()` would be joined,
        forever, at interpreter exit."""
        while True:
            try:
                return q.get_nowait()
            except queue.Empty:
                if stop.is_set():
                    return None
                await asyncio.sleep(0.02)

    def _drain(self, q: queue.Queue[_Item]) -> None:
        while True:
            try:
                q.get_nowait()
                self.stats["dropped"] += 1
            except queue.Empty:
                return

    async def _deliver(self, bot: Any, item: _Item) -> None:
        if item.kind in ("photo", "animation"):
            data = item.photo() if callable(item.photo) else item.photo
            if not data:
                return
            caption = truncate(redact(item.text, self._creds.token), CAPTION_LIMIT) or None
            if item.kind == "photo":
                await self._call(bot.send_photo, photo=data, caption=caption, filename=item.filename)
            else:
                await self._call(bot.send_animation, animation=data, caption=caption, filename=item.filename)
            return
        text = redact(item.text, self._creds.token)
        if not item.html:
            for part in split_message(text):
                await self._call(bot.send_message, text=part)
            return
        import telegram

        for part in split_message(text, html_mode=True):
            try:
                await self._call(bot.send_message, text=part, parse_mode="HTML")
            except telegram.error.BadRequest:
                # HTML Telegram cannot parse (or another 400): the same words as plain text
                for plain in split_message(html_to_text(part)):
                    await self._call(bot.send_message, text=plain)

    async def _call(self, method: Callable, **kwargs: Any) -> Any:
        """`method(chat_id=..., **kwargs)` with retries. Raises BadRequest at once (resending the same request
        cannot help), `_Disabled` for a rejected token or chat, `_Expired` past close()'s deadline."""
        import telegram.error as tg

        for attempt in range(self._max_attempts):
            try:
                return await method(chat_id=self._chat_id, **kwargs)
            except tg.RetryAfter as e:
                wait = _retry_after_seconds(e)
                err: Exception = e
            except tg.ChatMigrated as e:  # a group became a supergroup: its id changed
                self._chat_id = str(e.new_chat_id)
                wait, err = 0.0, e
            except tg.BadRequest:
                raise
            except (tg.InvalidToken, tg.Forbidden) as e:
                self._disable(f"Telegram: {type(e).__name__}: the bot may not post to the chat of "
                              f"{self._creds.source} or its token is invalid; no further reports")
                raise _Disabled() from None
            except (tg.NetworkError, tg.TelegramError) as e:  # timeouts, connection errors, 5xx
                wait, err = self._backoff * (2 ** attempt), e
            if attempt + 1 == self._max_attempts:
                raise err
            await self._sleep(min(wait, self._max_wait))
        raise AssertionError("unreachable")

    async def _sleep(self, seconds: float) -> None:
        deadline = self._deadline
        if deadline is not None and time.monotonic() + seconds > deadline:
            raise _Expired()
        await asyncio.sleep(seconds)

    def _disable(self, message: str) -> None:
        self._disabled = True
        self._warned = False  # this one must be seen even after an earlier warning
        self._warn_once(message)

    def _error(self, e: BaseException) -> str:
        return f"{type(e).__name__}: {redact(str(e), self._creds.token)}"


def _retry_after_seconds(e: Any) -> float:
    """`RetryAfter.retry_after` in seconds: an int in python-telegram-bot 22, a timedelta with
    PTB_TIMEDELTA=1 or in a later major version."""
    value = e.retry_after
    return float(value.total_seconds() if hasattr(value, "total_seconds") else value)


def _quiet_retry_after_deprecation() -> None:
    """python-telegram-bot 22 warns on every `RetryAfter` that `retry_after` will become a timedelta; we
    handle both types, so that one warning is noise. A global filter, because `warnings.catch_warnings`
    is not thread-safe and the warning is raised in the sender's thread; it matches only this message."""
    warnings.filterwarnings("ignore", message=r".*attribute `retry_after` will be of type")
