"""The example notebooks run top to bottom (a fresh python3 kernel each, in a temporary working folder,
so nothing is written into the repository), and the committed notebooks are stored executed (outputs a
reader sees on the web), from their current code (`tools/execute_notebooks.py` regenerates them), with no
paths of the machine they were run on and no large images."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamseg.config.loader import import_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# tools/ is not a package: the regenerating tool as a module, for its hash and image bound
_tool = import_file(EXAMPLES.parent / "tools" / "execute_notebooks.py", "_test_execute_notebooks")
MAX_IMAGE_BYTES, code_sha256 = _tool.MAX_IMAGE_BYTES, _tool.code_sha256
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # the longest cell trains a small model for about a minute on a CPU
MACHINE_PATH_MARKERS = ("/home/", "/Users/", "/work/", "/tmp/", "/root/", "/mnt/", "C:\\")  # "C:\\" is C:\


def test_there_are_notebooks() -> None:
    assert [p.name[:2] for p in NOTEBOOKS[:2]] == ["01", "02"], NOTEBOOKS


def _strings(value: Any) -> Iterator[str]:
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _machine_paths(value: Any) -> list[str]:
    return [m for s in _strings(value) for m in MACHINE_PATH_MARKERS if m in s]


REGENERATE = "run `python tools/execute_notebooks.py` to store it executed from its current code"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_executed_current_and_clean(path: Path) -> None:
    book = json.loads(path.read_text(encoding="utf-8"))
    assert book["metadata"]["kernelspec"]["name"] == "python3"
    assert not _machine_paths(book["metadata"]), f"{path.name}: notebook metadata contains a machine path"
    stored = book["metadata"].get("streamseg", {}).get("code_sha256")
    assert stored == code_sha256(book["cells"]), f"{path.name}: its code changed since its outputs were stored; {REGENERATE}"
    counts = [c.get("execution_count") for c in book["cells"] if c["cell_type"] == "code"]
    assert counts == list(range(1, len(counts) + 1)), f"{path.name}: not executed top to bottom once; {REGENERATE}"
    for i, cell in enumerate(book["cells"]):
        if cell["cell_type"] != "code":
            assert "outputs" not in cell and "execution_count" not in cell, f"{path.name}: cell {i} has outputs"
        found = _machine_paths(cell["source"]) + _machine_paths(cell.get("metadata", {})) + _machine_paths(
            cell.get("outputs", []))
        assert not found, f"{path.name}: cell {i} contains a machine path ({found[0]!r})"
        for out in cell.get("outputs", []):
            for mime, data in out.get("data", {}).items():
                if mime.startswith("image/"):
                    assert len(data) * 3 // 4 <= MAX_IMAGE_BYTES, f"{path.name}: cell {i}: {mime} too large"
    assert any(c.get("outputs") for c in book["cells"]), f"{path.name}: no outputs; {REGENERATE}"


def test_staleness_check_sees_a_changed_code_cell() -> None:
    book = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    code = next(c for c in book["cells"] if c["cell_type"] == "code")
    before = code_sha256(book["cells"])
    code["source"] = (code["source"] if isinstance(code["source"], str) else "".join(code["source"])) + "\n1 + 1"
    assert code_sha256(book["cells"]) != before


def test_clean_check_catches_machine_paths() -> None:
    assert _machine_paths({"a": [r"C:\Users\me\data"]}) == ["C:\\"]
    assert _machine_paths({"/mnt/x": 1}) == ["/mnt/"]
    assert _machine_paths(["data.root=_out/data", "../x"]) == []


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import ipykernel  # noqa: F401  (dev extras: a missing one fails, never skips)
    import nbclient
    import nbformat

    before = sorted(p.name for p in EXAMPLES.iterdir())
    stored = path.read_bytes()
    monkeypatch.setenv("STREAMSEG_NOTEBOOK_TEST", "1")  # the kernel inherits it: 03 then requires ONNX
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})  # the kernel's cwd
    client.execute()  # a failing cell raises CellExecutionError with its traceback
    assert (tmp_path / "_out").is_dir()  # the notebook wrote its files where it ran ...
    assert sorted(p.name for p in EXAMPLES.iterdir()) == before  # ... and nothing next to itself
    # the file on disk is untouched: this run's outputs live only in `book`
    assert path.read_bytes() == stored
