"""The NNI backend of `streamseg search`, as users run it: an HPO experiment through NNI's manager, and
architecture search with NNI's Random strategy. Marked `nni` (NNI 3.0 has x86_64 wheels only): deselect
with `-m "not nni"` where it is not installed. NNI writes `~/nni-experiments`, so HOME is a temporary
folder (set in the child process: NNI reads it at import)."""

from __future__ import annotations

import json
import re
import shlex
import socket
import sqlite3
from pathlib import Path

import pytest

from streamseg.config import load_configs, resolve_params, to_jsonable

from ..conftest import streamseg

pytestmark = pytest.mark.nni

TINY_EXP = str(Path(__file__).with_name("mstcn_tiny.py"))
NAS_EXP = str(Path(__file__).with_name("memtcn_tiny.py"))


def _o_items(command: str) -> list[str]:
    argv = shlex.split(command)
    return [argv[i + 1] for i, a in enumerate(argv) if a == "-o"]


@pytest.mark.slow  # NNI's manager starts in ~20 s, two trial processes in parallel: ~80 s on 2 busy cores
def test_hpo_experiment_runs_trials_through_nni_and_prints_a_reproducible_best(tmp_path, synth_root):
    home = tmp_path / "home"
    home.mkdir()
    out = streamseg("search", "-D", "synth", "-M", "mstcn", "-E", TINY_EXP, "-R", str(tmp_path), "-o",
                    f"data.root={synth_root}", "-o", "train.epochs=2", "--study", "n", "--trials", "2",
                    "--backend", "nni", "--seed", "0", "--concurrency", "2",  # both trials at once: ~70 s, not ~110 s
                    env={"HOME": str(home), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    text = " ".join(out.stdout.split())  # rich wraps lines
    assert "listens on ALL network interfaces" in text  # the warning
    study_dir = tmp_path / "synth" / "mstcn_tiny" / "search" / "n"

    # both trials ran through NNI: each wrote its run and reported its epochs and final value to the manager
    trials = {p.parent.name.removeprefix("nni_"): json.loads(p.read_text()) for p in study_dir.glob("trials/*/trial.json")}
    assert len(trials) == 2
    db = next(study_dir.glob("nni/*/db/nni.sqlite"))
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT trialJobId, type, data FROM MetricData").fetchall()
    for trial_id, trial in trials.items():
        periodical = [r for r in rows if r[0] == trial_id and r[1] == "PERIODICAL"]
        final = [json.loads(json.loads(r[2])) for r in rows if r[0] == trial_id and r[1] == "FINAL"]
        assert len(periodical) == 2  # one per validation epoch
        assert final == [pytest.approx(trial["best_val"])]

    # the best trial's printed command resolves to exactly the params its run used
    best = json.loads((study_dir / "best.json").read_text())
    assert len(best) == 1
    best = best[0]
    assert best["values"][0] == max(t["best_val"] for t in trials.values())
    assert f"re-run: {best['command']}" in text
    ran = trials[best["trial_id"]]
    assert ran["command"] == best["command"] and ran["overrides"] == best["overrides"]
    configs = load_configs("synth", "mstcn", TINY_EXP)
    params, _ = resolve_params(configs, _o_items(best["command"]))
    assert to_jsonable(params) == json.loads((Path(ran["run_dir"]) / "config" / "params.json").read_text())
    assert best["overrides"][0].startswith("train.lr=") and best["overrides"][1] in ("model.num_maps=4", "model.num_maps=8")

    # NNI's manifest went to the temporary HOME, and the manager is gone (its port no longer answers)
    manifest = json.loads((home / "nni-experiments" / ".experiment").read_text())
    (exp,) = manifest.values()
    assert exp["status"] == "STOPPED"
    port = int(re.search(r"interfaces, port (\d+)", text).group(1))
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_nas_returns_a_frozen_architecture_that_trains(tmp_path, synth_root):
    home = tmp_path / "home"
    home.mkdir()
    out = streamseg("search", "-D", "synth", "-M", "memtcn", "-E", NAS_EXP, "-R", str(tmp_path), "-o",
                    f"data.root={synth_root}", "--study", "a", "--trials", "2", "--backend", "nni", "--nas",
                    "--seed", "0", env={"HOME": str(home), "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    study_dir = tmp_path / "synth" / "memtcn_tiny" / "search" / "a"
    (best,) = json.loads((study_dir / "best.json").read_text())
    arch = best["architecture"]
    assert set(arch) == {"model.num_layers", "model.num_maps"}  # train.lr is not architecture
    # every trial trained the architecture NNI sampled
    runs = sorted(study_dir.glob("trials/nas_*/synth/memtcn_tiny/version_0"))
    assert len(runs) == 2
    samples = [json.loads((r / "config" / "params.json").read_text())["model"] for r in runs]
    assert {(s["num_layers"], s["num_maps"]) for s in samples} >= {(arch["model.num_layers"], arch["model.num_maps"])}
    assert all(s["num_layers"] in (1, 2, 3) and s["num_maps"] in (4, 8) for s in samples)
    assert " ".join(out.stdout.split()).count("complete") == 2

    # the space, frozen at the best architecture, is a plain streamseg MemoryTCN that trains
    import torch

    from streamseg.engine.datamodule import DatasetInfo
    from streamseg.models import MemoryTCN, SegmentationLoss
    from streamseg.search.nni_nas import ConfigModelSpace, NetBuilder, architecture_params

    configs = load_configs("synth", "memtcn", NAS_EXP)
    base, _ = resolve_params(configs, [f"data.root={synth_root}"])
    info = DatasetInfo("synth", [f"c{i}" for i in range(5)], [0], 64, 15.0, 1)
    space = ConfigModelSpace(NetBuilder(configs, base, info), architecture_params(configs.exp))
    net = space.freeze(arch)
    assert type(net) is MemoryTCN
    assert len(net.stages[0].layers) == arch["model.num_layers"] and net.stages[0].num_maps == arch["model.num_maps"]
    torch.manual_seed(0)
    x, y = torch.randn(2, 64, 40), torch.randint(0, 5, (2, 40))
    loss_fn, opt = SegmentationLoss(5), torch.optim.Adam(net.parameters(), lr=2e-2)
    losses = []
    for _ in range(60):  # ~1 s
        logits, _ = net(x, net.init_state(2, "cpu"), None)
        loss, _ = loss_fn(logits, y, torch.ones(2, 1, 40))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]  # (dropout 0.5 keeps it from reaching 0)
