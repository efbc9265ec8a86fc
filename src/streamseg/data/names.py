"""Video and class names are data, not paths.

A name read from a split file, ``mapping.txt`` or a folder listing becomes part of file paths
(``groundTruth/<name>.txt``, ``predictions/<name>``, ``plots/seg_<name>.png``). A name such as
``../../etc/x`` or ``/tmp/x`` would make the toolkit read, or write, a file outside its folder, so every
such name must be a plain file name: `unsafe_name_reason` says why one is not, `child_path` is the one
way a name becomes a path.
"""

from __future__ import annotations

from pathlib import Path

from streamseg.data.errors import DataError

_SEPARATORS = ("/", "\\", "\x00")  # POSIX and Windows separators, and NUL (which ends a C path)


def unsafe_name_reason(name: str) -> str | None:
    """Why ``name`` is not a plain file name (``None`` when it is one).

    Refused: empty, ``.`` and ``..``, and any name holding ``/``, ``\\`` or NUL (so also absolute paths).
    """
    if not name:
        return "empty name"
    if name in (".", ".."):
        return f"{name!r} names a folder"
    for sep in _SEPARATORS:
        if sep in name:
            return f"contains {sep!r}"
    return None


def check_name(name: str, where: str | Path, line: int | None = None, what: str = "video name") -> None:
    """Raise `DataError` (at ``where``:``line``) unless ``name`` is a plain file name."""
    reason = unsafe_name_reason(name)
    if reason is not None:
        raise DataError(where, f"{what} {name!r} is not a plain file name ({reason}); names are data, not paths",
                        line)


def child_path(directory: str | Path, name: str, suffix: str = "", prefix: str = "") -> Path:
    """``directory / (prefix + name + suffix)``, refusing (`DataError`) a ``name`` that would leave it."""
    check_name(name, directory)
    return Path(directory) / f"{prefix}{name}{suffix}"
