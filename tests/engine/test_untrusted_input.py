"""A dataset, a checkpoint or a command line written by someone else: nothing outside the run directory is
touched, no file load runs code or ends in a traceback, no secret reaches a file or the terminal
(docs/reliability.md rows 8-11 name these tests)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from streamseg.cli.main import main
from streamseg.data.check import check_dataset, format_problems
from streamseg.data.errors import DataError

from ..conftest import REPO, TINY

SYNTH = ["-o", "data.num_videos=8", "-o", "data.with_videos=false"]  # the synth_root fixture's spec


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _cli_error(argv: list[str], one_line: bool = True) -> str:
    """Run the command in this process; it must end with `error: ...` (exit code 1: SystemExit with a message),
    not a traceback; on one line unless it is a data-check report (one line per problem)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    message = info.value.code
    assert isinstance(message, str), f"exit code {message!r}, expected an error message"
    assert message.startswith("error: "), message
    assert not one_line or "\n" not in message.strip(), message
    return message


# ---------------------------------------------------------------------------------------------- item 1: names
def test_a_split_line_outside_the_dataset_is_refused_and_nothing_outside_is_read_or_written(tmp_path, synth_root):
    """A test split listing `../../outside/v.txt`: data check and train report it at its line; the outside
    label file's content is never echoed and no file outside the run directory appears or changes."""
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "v.txt").write_text("OUTSIDE-FIRST-LINE\n" * 40)
    np.save(outside / "v.npy", np.zeros((4, 40), np.float32))
    split = root / "splits" / "test.split1.bundle"
    lines = split.read_text().splitlines()
    traversal = os.path.relpath(outside / "v", root / "groundTruth")  # ../../outside/v
    split.write_text("\n".join([*lines, f"{traversal}.txt", ""]))
    before = _tree(tmp_path)

    problems = check_dataset(root, splits=[1])
    report = format_problems(problems)
    assert f"{split}:{len(lines) + 1}: video name '{traversal}' is not a plain file name" in report
    assert "OUTSIDE-FIRST-LINE" not in report

    message = _cli_error(["train", "-D", "synth", "-M", "mstcn", "-E", "quick", "-R", str(tmp_path / "exp"),
                          *TINY[:-2], *SYNTH, "-o", f"data.root={root}"], one_line=False)
    assert f"{split}:{len(lines) + 1}: video name" in message
    assert "OUTSIDE-FIRST-LINE" not in message
    assert _tree(tmp_path) == before  # no run directory, nothing written anywhere


def test_the_writers_refuse_a_name_that_would_leave_their_folder(tmp_path):
    """Whatever a custom DataModule yields: predictions and plots are written only inside their folders."""
    from streamseg.engine.checkpoint_eval import write_plots
    from streamseg.engine.evaluation import EvalResult, write_predictions
    from streamseg.engine.rundir import RunDir

    labels = np.zeros(6, np.int64)
    run = RunDir(tmp_path / "run", 0, None)
    for name in ("../escaped", "/tmp/escaped", "..", "a/b"):
        with pytest.raises(DataError, match="not a plain file name"):
            write_predictions(run.predictions, [(name, labels, labels)], ["background"])
        info = SimpleNamespace(class_names=["background"], bg_ids=[0], fps=15.0)
        with pytest.raises(DataError, match="not a plain file name"):
            write_plots(run.plots, EvalResult([(name, labels, labels)], {}), info)
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == []
    write_predictions(run.predictions, [("ok", labels, labels)], ["background"])
    assert (run.predictions / "ok").is_file()


def test_evaluate_and_infer_refuse_names_that_are_paths(tmp_path):
    from streamseg.cli.evaluate import EvaluationInputError, read_split

    split = tmp_path / "test.bundle"
    split.write_text("a.txt\n../../x.txt\n")
    with pytest.raises(EvaluationInputError, match=r"test\.bundle:2: video name '\.\./\.\./x' is not a plain file"):
        read_split(split)
    message = _cli_error(["infer", str(tmp_path / "v.mp4"), "--model", str(tmp_path / "m.onnx"), "--name", "../x",
                          "--pred-dir", str(tmp_path / "preds")])
    assert "--name '../x' is not a plain file name" in message
    assert not (tmp_path / "preds").exists()


# ---------------------------------------------------------------------------------------------- item 7: docs
def test_reliability_doc_names_only_what_the_engine_really_calls():
    """docs/reliability.md, "Where it lives": a module said to be "called from `<engine module>.<function>`"
    has each named function in its module, and that engine module uses them (no documented gate that
    nothing calls)."""
    import importlib
    import re

    doc = (REPO / "docs" / "reliability.md").read_text()
    bullets = [" ".join(b.split()) for b in re.findall(r"^\* (`streamseg\.[^\n]*(?:\n  [^\n]*)*)", doc, re.M)]
    bullets = [b for b in bullets if "called from `" in b]
    assert bullets, "no 'called from `<engine module>...`' line in docs/reliability.md"
    for bullet in bullets:
        module_name, *names = re.findall(r"`([\w.]+)`", bullet.split("called from")[0])
        caller = re.findall(r"`([\w.]+)`", bullet.split("called from")[1])[0].split(".")[0]
        caller_src = (REPO / "src" / "streamseg" / "engine" / f"{caller}.py").read_text()
        module = importlib.import_module(module_name)
        for name in names:
            assert hasattr(module, name), f"{module_name}.{name} is documented but does not exist"
            assert re.search(rf"\b{name}\b", caller_src), f"{module_name}.{name} is documented as called from {caller}"


# ---------------------------------------------------------------------------------------------- item 6: loads
class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # unpickling would call open(marker, "w"): a file appears if code ran
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synth_root):
    """A finished tiny MS-TCN run: (experiments root, run directory, the -D/-M/-E/-R/-o arguments)."""
    from streamseg.api import Experiment

    root = tmp_path_factory.mktemp("untrusted") / "experiments"
    items = [TINY[i + 1] for i in range(0, len(TINY), 2)] + [f"data.root={synth_root}"]
    run = Experiment.load("synth", "mstcn", "quick", overrides=items).train(root=root)
    args = ["-D", "synth", "-M", "mstcn", "-E", "quick", "-R", str(root), *TINY, "-o", f"data.root={synth_root}"]
    return root, run.path, args


def _refused(message: str, path: Path) -> None:
    """One line naming the file and why, never torch's advice to turn safe loading off."""
    assert str(path) in message and "needs code to unpickle, which is refused" in message, message
    assert "weights_only=False" not in message and "\n" not in message.strip(), message
    assert "--new" not in message, message  # resume's advice; these commands only read the file


def test_every_file_load_refuses_a_pickle_that_would_run_code_with_one_line(tmp_path, trained):
    import torch

    from streamseg.api import Run
    from streamseg.engine.checkpoint_io import CheckpointError

    root, run_path, args = trained
    marker = tmp_path / "pwned"
    evil_ckpt = run_path / "checkpoints" / "evil.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "global_step": 0, "payload": _Exploit(marker)}, evil_ckpt)
    evil_weights = tmp_path / "evil.pt"
    torch.save({"stage1.conv_1x1.weight": _Exploit(marker)}, evil_weights)
    try:
        _refused(_cli_error(["test", *args, "--ckpt", str(evil_ckpt)]), evil_ckpt)
        _refused(_cli_error(["test", *args, "--ckpt", "none", "-o", f"model.weights={evil_weights}"]), evil_weights)
        _refused(_cli_error(["train", *args, "-R", str(tmp_path / "exp"), "-o", f"model.weights={evil_weights}"]),
                 evil_weights)
        _refused(_cli_error(["infer", str(tmp_path / "v.mp4"), "--model", str(evil_ckpt)]), evil_ckpt)
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnxscript")
        _refused(_cli_error(["export", "onnx", str(evil_ckpt), "--out", str(tmp_path / "m.onnx")]), evil_ckpt)
        with pytest.raises(CheckpointError) as info:
            Run(run_path).streamer(evil_ckpt)
        _refused(str(info.value), evil_ckpt)
    finally:
        evil_ckpt.unlink()
    assert not marker.exists()


def test_test_with_a_truncated_best_checkpoint_falls_back_or_names_the_file(tmp_path, trained, recwarn):
    from streamseg.engine.checkpoint_io import CheckpointFallbackWarning, previous_path

    root, run_path, args = trained
    copy = tmp_path / "experiments"
    shutil.copytree(root, copy)
    args = [*args, "-R", str(copy)]
    best = copy / run_path.relative_to(root) / "checkpoints" / "best.ckpt"
    intact = best.read_bytes()
    best.write_bytes(intact[: len(intact) // 2])
    previous_path(best).unlink(missing_ok=True)
    message = _cli_error(["test", *args, "--ckpt", "best"])
    assert str(best) in message and "no previous checkpoint best.prev.ckpt" in message, message
    assert "PytorchStreamReader" not in message.split(":", 2)[1]  # the reason is ours, torch's text only after it

    previous_path(best).write_bytes(intact)  # the generation before it survives: the test falls back to it
    assert main(["test", *args, "--ckpt", "best"]) == 0
    assert any(issubclass(w.category, CheckpointFallbackWarning) and "best.prev.ckpt" in str(w.message)
               for w in recwarn)


def test_a_damaged_onnx_model_is_one_line_naming_the_file(tmp_path):
    pytest.importorskip("onnxruntime")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07not a protobuf graph")
    meta = {"format": 1, "class_names": ["a", "b"], "fps": 15.0, "input_kind": "features", "lookahead": 0,
            "sample_rate": 1, "sample_shape": [4], "state_shapes": []}
    model.with_suffix(".json").write_text(__import__("json").dumps(meta))
    message = _cli_error(["infer", str(tmp_path / "v.mp4"), "--model", str(model)])
    assert f"{model}: not a loadable ONNX model" in message, message
