"""The one error type of `streamseg.data`: a problem with a file on disk, named by path and line."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A dataset file is missing, malformed or inconsistent.

    The message starts with ``<path>:<line>: `` (or ``<path>: `` when no single line is at fault), so
    an editor or terminal can jump straight to it, e.g.
    ``data/gtea/groundTruth/S1_Tea_C1.txt:17: unknown label 'stirr'; valid: background, take, ...``.

    Attributes:
        path: the file (or directory) at fault.
        line: 1-based line number, or None.
        reason: the message without the location prefix.
    """

    def __init__(self, path: str | Path, reason: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {reason}")
