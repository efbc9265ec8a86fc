"""docs/model_zoo.md cannot go stale: its synth table has one row per `exp_configs/synth/*.py`, and each
row's parameters, look-ahead, latency and GFLOPs/frame are what the configs build now; its paper table's
counts are what the `<dataset>/<model>_paper.py` configs build at 2048-d input.

Regenerate the static columns with `python tools/zoo_table.py` (tools/zoo_table.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from streamseg.config import load_configs, resolve_params
from streamseg.config.loader import import_file
from streamseg.data.synth import CLASSES
from streamseg.engine.datamodule import DatasetInfo
from streamseg.engine.batches import BatchKind
from streamseg.engine.runner import batch_kind, build_net

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "model_zoo.md"


@pytest.fixture(scope="module")
def zoo():
    """tools/zoo_table.py as a module (tools/ is not a package)."""
    return import_file(REPO / "tools" / "zoo_table.py", "_test_zoo_table")


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tests/conftest.py


def _table(name: str) -> list[dict[str, str]]:
    """The markdown table between `<!-- zoo:NAME -->` and `<!-- /zoo:NAME -->` as rows of {header: cell}."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"<!-- zoo:{name} -->\n(.*?)\n<!-- /zoo:{name} -->", text, flags=re.S)
    assert match, f"{DOC}: no table between <!-- zoo:{name} --> and <!-- /zoo:{name} -->"
    lines = [line.strip() for line in match.group(1).strip().splitlines() if line.strip()]
    split = [[c.strip().strip("`") for c in line.strip("|").split("|")] for line in lines]
    header, rows = split[0], split[2:]  # split[1] is the |---| rule
    assert all(len(r) == len(header) for r in rows), f"{DOC} {name}: a row has the wrong number of cells"
    return [dict(zip(header, r)) for r in rows]


def _built(model: str, exp: str):
    """(net, params, info) as a synth run builds them: resolved params, the synthetic dataset's classes
    and input channels (independently of tools/zoo_table.py's `build_synth`)."""
    configs = load_configs("synth", model, exp, REPO)
    params, _ = resolve_params(configs)
    kind = batch_kind(configs, params)
    info = DatasetInfo("synth", list(CLASSES), [CLASSES.index("background")],
                       3 if kind is BatchKind.STREAMS else params.data.feature_dim, params.data.fps, params.data.sample_rate,
                       batch_kind=kind)
    return build_net(configs.model, params.model, info), params, info


def test_every_synth_experiment_has_exactly_one_row(zoo) -> None:
    rows = [(r["model"], r["exp"]) for r in _table("synth")]
    assert len(rows) == len(set(rows)), "duplicate rows"
    assert sorted(rows) == sorted(zoo.experiments("synth"))


def test_synth_rows_are_what_the_configs_build(zoo) -> None:
    for r in _table("synth"):
        where = f"{DOC} row {r['model']} {r['exp']}"
        net, params, info = _built(r["model"], r["exp"])
        assert int(r["params"].replace(",", "")) == sum(p.numel() for p in net.parameters()), where
        assert r["look-ahead"] == ("whole video" if net.lookahead is None else str(net.lookahead)), where
        assert r["command"] == f"streamseg train -D synth -M {r['model']} -E {r['exp']}", where
        static = zoo.synth_row(r["model"], r["exp"], built=(net, params, info))  # FLOPs, latency, input
        assert r["GFLOPs/frame"] == static["gflops_per_frame"], where
        assert r["latency"] == zoo.fmt_latency(static), where
        assert r["input"] == zoo.fmt_input(static), where
        if params.train.chunk_size > 0:  # streaming: the chunk wait (chunk - 1 sampled frames) only
            assert static["latency_frames"] == (params.train.chunk_size - 1) * params.data.sample_rate, where


def test_paper_counts_are_what_the_paper_configs_build(zoo) -> None:
    rows = {(r["model"], r["dataset (classes)"]): r for r in _table("paper")}
    built = zoo.paper_rows()
    assert sorted(rows) == sorted((b["model"], f"{b['dataset']} ({b['num_classes']})") for b in built)
    for b in built:
        r = rows[(b["model"], f"{b['dataset']} ({b['num_classes']})")]
        assert int(r["params at 2048-d"].replace(",", "")) == b["params"] == b["official"], r


def test_measured_columns_come_from_the_newest_finished_run(zoo, tmp_path: Path) -> None:
    exp_dir = tmp_path / "synth" / "mstcn_quick"
    for version, acc, done in ((0, 50.0, True), (1, 60.0, True), (2, 70.0, False)):  # 2: unfinished
        v = exp_dir / f"version_{version}"
        v.mkdir(parents=True)
        (v / "metrics.json").write_text(json.dumps({"acc": acc, "edit": 1.0, "train_seconds": 12.5}))
        if done:
            (v / "DONE").write_text("finished\n")
    m = zoo.measured(tmp_path, "mstcn", "quick")
    assert m["acc"] == 60.0 and m["run"].endswith("version_1") and m["train_seconds"] == 12.5
    (tmp_path / "synth" / "asformer_quick" / "version_0").mkdir(parents=True)  # started, never finished
    assert zoo.measured(tmp_path, "asformer", "quick") == {"unfinished": str(tmp_path / "synth" / "asformer_quick" / "version_0")}
    assert zoo.measured(tmp_path, "asrf", "quick") is None


def test_encoder_rows_are_what_the_encoders_build(zoo) -> None:
    rows = _table("encoders")
    built = {r["backbone"]: r for r in zoo.encoder_rows()}
    assert [r["backbone"] for r in rows] == list(built), "one row per video_memtcn backbone, in its order"
    for r in rows:
        b, where = built[r["backbone"]], f"{DOC} encoders row {r['backbone']}"
        assert int(r["params"].replace(",", "")) == b["params"], where
        assert r["GFLOPs/frame"] == b["gflops_per_frame"] and r["GMACs/window"] == b["gmacs_per_window"], where
        assert r["look-ahead"] == str(b["lookahead"]) == str(b["clip_len"] - 1), where
        assert r["window x frame"] == f"{b['window']}x{b['frame_size'][0]}x{b['frame_size'][1]} (clip {b['clip_len']})"
        assert r["published"] == (b["published"] or "-"), where
