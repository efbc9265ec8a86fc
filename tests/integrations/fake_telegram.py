"""A fake Telegram Bot API server on 127.0.0.1 that records what arrives, and can misbehave on purpose.

Request formats (python-telegram-bot 22): `POST /bot<token>/<method>`; getMe has no body, sendMessage is
`application/x-www-form-urlencoded`, sendPhoto is `multipart/form-data` with a `photo` file part (sendAnimation
the same with an `animation` part; either file lands in `Call.photo`).

Modes:
    "ok"       answers every call
    "slow"     holds every request until the server is stopped (a hung Telegram)
    "429"      answers the first `fail_first` sends with HTTP 429 and `retry_after` seconds, then ok
    "html400"  answers HTTP 400 to any message with parse_mode=HTML (as for entities it cannot parse)
    "401"      rejects the token (HTTP 401) on every call
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

OK_ME = {"ok": True, "result": {"id": 1, "is_bot": True, "first_name": "B", "username": "b_bot"}}


def ok_message(chat_id: str) -> dict:
    return {"ok": True, "result": {"message_id": 1, "date": 0, "chat": {"id": int(chat_id), "type": "private"}}}


@dataclass
class Call:
    method: str  # "getMe", "sendMessage", "sendPhoto", "sendAnimation"
    token: str  # the token in the path, so tests can check it was the right one
    fields: dict[str, str] = field(default_factory=dict)  # form fields (chat_id, text, parse_mode, caption)
    photo: bytes | None = None
    answered: int = 200  # HTTP status we answered
    at: float = 0.0  # time.monotonic() when the request arrived


class FakeTelegram:
    """`with FakeTelegram(mode) as server:` -> `server.url` for the notifier, `server.calls` to inspect."""

    def __init__(self, mode: str = "ok", retry_after: int = 1, fail_first: int = 1):
        self.mode, self.retry_after, self.fail_first = mode, retry_after, fail_first
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.released = threading.Event()  # set on stop: lets held ("slow") requests finish
        self._sends = 0
        handler = type("Handler", (_Handler,), {"server_state": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "FakeTelegram":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ what arrived
    def delivered(self, method: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.method == method and c.answered == 200]

    def texts(self) -> list[str]:
        return [c.fields["text"] for c in self.delivered("sendMessage")]

    def decide(self, call: Call) -> tuple[int, dict]:
        """The HTTP status and JSON body to answer `call` with."""
        ok = OK_ME if call.method == "getMe" else ok_message(call.fields.get("chat_id", "5"))
        if self.mode == "401":
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if call.method == "getMe":
            return 200, ok
        if self.mode == "429":
            with self.lock:
                self._sends += 1
                limited = self._sends <= self.fail_first
            if limited:
                return 429, {"ok": False, "error_code": 429, "description": "Too Many Requests: retry later",
                             "parameters": {"retry_after": self.retry_after}}
        if self.mode == "html400" and call.fields.get("parse_mode", "").upper() == "HTML":
            return 400, {"ok": False, "error_code": 400,
                         "description": "Bad Request: can't parse entities: unsupported start tag"}
        return 200, ok


class _Handler(BaseHTTPRequestHandler):
    server_state: FakeTelegram

    def log_message(self, format: str, *args) -> None:
        pass  # the default writes the request line, token included, to stderr

    def do_POST(self) -> None:
        state = self.server_state
        parts = self.path.strip("/").split("/")
        token = parts[0].removeprefix("bot") if parts else ""
        call = Call(method=parts[-1], token=token, at=time.monotonic())
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("application/x-www-form-urlencoded"):
            call.fields = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        elif ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                f"Content-Type: {ctype}\r\n\r\n".encode() + body)
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                payload = part.get_payload(decode=True)
                if part.get_filename():
                    call.photo = payload
                else:
                    call.fields[name] = payload.decode()
        if state.mode == "slow":
            state.released.wait()  # hold the request until the test ends
        status, answer = state.decide(call)
        call.answered = status
        with state.lock:
            state.calls.append(call)
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (timeout) before we answered
            pass


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused): Telegram is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
