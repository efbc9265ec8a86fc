"""Text helpers for Telegram messages: splitting at the length limit, HTML escaping and stripping, redaction.

Pure functions on strings (no python-telegram-bot, no Lightning), so they are cheap to test exhaustively.
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote

# Bot API limits, counted in UTF-16 code units after entity parsing (https://core.telegram.org/bots/api).
# We count the raw HTML source, which is never shorter than the parsed text, so a chunk that fits here fits
# there too.
MESSAGE_LIMIT = 4096
CAPTION_LIMIT = 1024

_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9-]*)[^>]*>")
# a tag, an entity, or a run of text with neither (html.escape() leaves no bare '<' or '&' behind)
_TOKEN = re.compile(r"<[^>]*>|&#?\w+;|[^<&]+|[<&]")


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (a character outside the BMP, e.g. an emoji, is 2)."""
    return len(text.encode("utf-16-le")) // 2


def escape(text: object) -> str:
    """`str(text)` made safe for HTML parse mode (only <, > and & are special there)."""
    return html.escape(str(text), quote=False)


def html_to_text(text: str) -> str:
    """The plain text a reader would see: tags removed, entities decoded (for the plain-text fallback)."""
    return html.unescape(re.sub(r"<[^>]*>", "", text))


def redact(text: str, secret: str | None) -> str:
    """`text` with every form of `secret` (as is, URL-quoted, and a bot token's part after ':') replaced.

    A bot token is `<bot id>:<secret>`; the id alone is public, the part after the colon is what grants
    control of the bot, so that part is hidden wherever it appears on its own too."""
    if not secret:
        return text
    forms = {secret, quote(secret, safe=""), quote(secret)}
    if ":" in secret:
        tail = secret.split(":", 1)[1]
        if len(tail) >= 8:  # a short tail would also match innocent text; real tails are ~35 characters
            forms.add(tail)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "<redacted>")
    return text


def truncate(text: str, limit: int, marker: str = "...") -> str:
    """`text` cut to at most `limit` UTF-16 units, ending with `marker` when cut (plain text only)."""
    if utf16_len(text) <= limit:
        return text
    return _prefix_within(text, limit - utf16_len(marker)) + marker


def tail(text: str, limit: int, marker: str = "...\n") -> str:
    """The end of `text` within `limit` UTF-16 units, starting with `marker` when cut (for tracebacks,
    whose last lines are the useful ones)."""
    if utf16_len(text) <= limit:
        return text
    budget = limit - utf16_len(marker)
    kept = text[::-1]
    kept = _prefix_within(kept, budget)[::-1]
    return marker + kept


def _prefix_within(text: str, units: int) -> str:
    """The longest prefix of `text` of at most `units` UTF-16 units (never half a surrogate pair)."""
    if units <= 0:
        return ""
    if len(text) <= units and utf16_len(text) <= units:
        return text
    total, end = 0, 0
    for ch in text:
        w = 2 if ord(ch) > 0xFFFF else 1
        if total + w > units:
            break
        total += w
        end += 1
    return text[:end]


def split_message(text: str, limit: int = MESSAGE_LIMIT, html_mode: bool = False) -> list[str]:
    """Split `text` into messages of at most `limit` UTF-16 units each, preferring line boundaries.

    With `html_mode`, a tag or entity is never cut, and tags open at a cut (e.g. a long <pre> traceback)
    are closed at the end of one message and reopened at the start of the next, so every message is
    valid HTML on its own. Messages with no visible text are dropped (Telegram rejects empty messages).
    """
    chunks: list[str] = []
    stack: list[tuple[str, str]] = []  # open tags: (name, the opening tag as written)
    cur = ""  # the message being built; starts with the reopened tags

    def closers(st: list[tuple[str, str]]) -> str:
        return "".join(f"</{name}>" for name, _ in reversed(st))

    def opener(st: list[tuple[str, str]]) -> str:
        return "".join(tag for _, tag in st)

    def flush() -> None:
        nonlocal cur
        body = cur + closers(stack)
        if (html_to_text(body) if html_mode else body).strip():
            chunks.append(body)
        cur = opener(stack)

    def fits(piece: str, after: list[tuple[str, str]]) -> bool:
        return utf16_len(cur) + utf16_len(piece) + utf16_len(closers(after)) <= limit

    for line in text.splitlines(keepends=True):
        after = _apply_tags(stack, line) if html_mode else stack
        if fits(line, after):
            cur, stack = cur + line, after
            continue
        if cur != opener(stack):  # the line would fit better in a fresh message
            flush()
            if fits(line, after):
                cur, stack = cur + line, after
                continue
        # one line longer than a whole message: cut it between tokens, and text runs anywhere
        tokens = _TOKEN.findall(line) if html_mode else [line]
        for tok in tokens:
            while tok:
                after = _apply_tags(stack, tok) if html_mode else stack
                if fits(tok, after):
                    cur, stack, tok = cur + tok, after, ""
                    continue
                is_text = not html_mode or not (tok.startswith("<") or (tok.startswith("&") and tok.endswith(";")))
                room = limit - utf16_len(cur) - utf16_len(closers(stack))
                head = _prefix_within(tok, room) if is_text else ""
                if head:
                    cur, tok = cur + head, tok[len(head):]
                if cur == opener(stack) and not head:
                    raise ValueError(f"split_message: limit {limit} is too small for {tok[:40]!r} after {opener(stack)!r}")
                flush()
    flush()
    return chunks


def _apply_tags(stack: list[tuple[str, str]], text: str) -> list[tuple[str, str]]:
    """The open-tag stack after `text` (well-formed HTML as we write it: every tag we open we close)."""
    out = list(stack)
    for m in _TAG.finditer(text):
        closing, name = m.group(1) == "/", m.group(2).lower()
        if closing:
            for i in range(len(out) - 1, -1, -1):
                if out[i][0] == name:
                    del out[i:]
                    break
        else:
            out.append((name, m.group(0)))
    return out
