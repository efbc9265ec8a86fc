#!/usr/bin/env python3
"""Execute the example notebooks and store them with their outputs, so a reader browsing them on the web
sees the tables and plots. Run after changing a notebook or the code it shows:

    python tools/execute_notebooks.py            # those of examples/*.ipynb whose code changed
    python tools/execute_notebooks.py --all      # every one
    python tools/execute_notebooks.py examples/02_train_and_evaluate.ipynb

Each notebook runs in a fresh python3 kernel in a temporary working folder (as tests/test_notebooks.py runs
them), so nothing is written into the repository but the notebook. What is stored is scrubbed: the
temporary folder's path becomes `.`, the Python environment's `<env>`, the checkout's `<repo>` and the
home folder `~`; kernel execution timestamps are dropped;
images are kept only under `MAX_IMAGE_BYTES` (a bigger one fails the run: make the figure smaller).
`metadata.streamseg.code_sha256` records the hash of the code cells as executed: tests/test_notebooks.py
fails when a notebook's code changed since its outputs were stored (run this tool again).
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CELL_TIMEOUT_S = 1200  # generous: a busy machine trains notebook 02's model for minutes
MAX_IMAGE_BYTES = 200_000  # a 9x2 inch plot of noisy features at the inline backend's dpi is ~160 kB


def code_sha256(cells: list[Any]) -> str:
    """The hash of every code cell's source, in order (what the stored outputs were produced by)."""
    h = hashlib.sha256()
    for cell in cells:
        if cell["cell_type"] == "code":
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            h.update(source.encode() + b"\0")
    return h.hexdigest()


def _scrub_text(text: str, folder: str) -> str:
    for path in {folder, os.path.realpath(folder)}:
        text = text.replace(path + "/", "").replace(path, ".")
    # a library's warning names its file: the environment's and the checkout's paths become placeholders
    for path, name in ((sys.prefix, "<env>"), (str(EXAMPLES.parent), "<repo>")):
        text = text.replace(path, name)
    home = os.path.expanduser("~")
    return text.replace(home + "/", "~/") if home not in ("/", "") else text


def _scrub(value: Any, folder: str) -> Any:
    if isinstance(value, str):
        return _scrub_text(value, folder)
    if isinstance(value, list):
        return [_scrub(v, folder) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, folder) for k, v in value.items()}
    return value


def execute(path: Path) -> None:
    import nbclient
    import nbformat

    book = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="streamseg-nb-") as folder:
        client = nbclient.NotebookClient(book, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                         resources={"metadata": {"path": folder}})
        client.execute()
        for i, cell in enumerate(book.cells):
            cell.metadata.pop("execution", None)  # kernel timestamps: noise in every diff
            if cell.cell_type != "code":
                continue
            cell.outputs = nbformat.from_dict(_scrub(cell.outputs, folder))
            for out in cell.outputs:
                for mime, data in out.get("data", {}).items():
                    if mime.startswith("image/") and len(base64.b64decode(data)) > MAX_IMAGE_BYTES:
                        raise SystemExit(f"{path}: cell {i}: a {mime} output of {len(base64.b64decode(data))} bytes "
                                         f"(at most {MAX_IMAGE_BYTES}): make the figure smaller")
    book.metadata.pop("widgets", None)
    book.metadata["streamseg"] = {"code_sha256": code_sha256(book.cells)}
    nbformat.write(book, path)
    print(f"stored {path.relative_to(EXAMPLES.parent)} with outputs", flush=True)


def is_current(path: Path) -> bool:
    """Stored with outputs from its current code cells."""
    import nbformat

    book = nbformat.read(path, as_version=4)
    return book.metadata.get("streamseg", {}).get("code_sha256") == code_sha256(book.cells)


def main(argv: list[str]) -> int:
    force = "--all" in argv
    paths = [Path(a) for a in argv if a != "--all"]
    if not paths:
        paths = [p for p in sorted(EXAMPLES.glob("*.ipynb")) if force or not is_current(p)]
    for path in paths:
        execute(path.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
