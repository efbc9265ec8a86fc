"""The example notebooks run top to bottom (a fresh python3 kernel each, in a temporary working folder,
so nothing is written into the repository), and the committed notebooks carry no outputs, execution
counts or paths of the machine they were written on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_is_clean(path: Path) -> None:
    book = json.loads(path.read_text(encoding="utf-8"))
    assert book["metadata"]["kernelspec"]["name"] == "python3"
    assert not _machine_paths(book["metadata"]), f"{path.name}: notebook metadata contains a machine path"
    for i, cell in enumerate(book["cells"]):
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{path.name}: cell {i} has stored outputs (clear them)"
            assert cell.get("execution_count") is None, f"{path.name}: cell {i} has an execution count"
        else:
            assert "outputs" not in cell and "execution_count" not in cell, f"{path.name}: cell {i} has outputs"
        found = _machine_paths(cell["source"]) + _machine_paths(cell.get("metadata", {}))
        assert not found, f"{path.name}: cell {i} contains a machine path ({found[0]!r})"


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
    monkeypatch.setenv("STREAMSEG_NOTEBOOK_TEST", "1")  # the kernel inherits it: 03 then requires ONNX
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})  # the kernel's cwd
    client.execute()  # a failing cell raises CellExecutionError with its traceback
    assert (tmp_path / "_out").is_dir()  # the notebook wrote its files where it ran ...
    assert sorted(p.name for p in EXAMPLES.iterdir()) == before  # ... and nothing next to itself
    # the file on disk is untouched: executed outputs live only in `book`
    assert all(c.get("outputs") == [] for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
