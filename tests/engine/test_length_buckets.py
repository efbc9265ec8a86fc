"""train.compile on whole-video batches: one static graph per length bucket (`train.length_bucket`), padding
masked so losses and scores do not change, or the time axis marked dynamic; the compile cache goes where
`train.compile_cache` says (engine/compiling.py)."""

from __future__ import annotations

import os

import pytest
import torch

from streamseg.config import ConfigError, TrainParams, load_configs, resolve_params
from streamseg.data import collate_videos
from streamseg.engine import dist
from streamseg.engine.compiling import compile_net, configure_compile_cache
from streamseg.engine.datamodule import DatasetInfo, FeatureDataModule
from streamseg.engine.module import SegmentationModule
from streamseg.engine.runner import build
from streamseg.engine.schedules import check_train_options
from streamseg.engine.throughput import compiled_graphs
from streamseg.models import MSTCN, SegmentationLoss

D, K = 16, 5
LENGTHS = [130, 150, 170, 200, 230, 250]  # six lengths, two buckets of 64 (192, 256)


def _module(net: torch.nn.Module) -> SegmentationModule:
    info = DatasetInfo("t", [f"c{i}" for i in range(K)], [], D, 15.0, 1)
    return SegmentationModule(net, info, SegmentationLoss(K), optimizer=torch.optim.Adam)


def _items(lengths: list[int]) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"name": f"v{i}", "index": i, "features": torch.randn(D, n, generator=g),
             "labels": torch.randint(0, K, (n,), generator=g), "full_labels": torch.zeros(n, dtype=torch.long)}
            for i, n in enumerate(lengths)]


def _train_graphs(length_bucket: int) -> list[int]:
    """Graphs compiled after each training batch (forward + backward) of one video, lengths LENGTHS."""
    torch.manual_seed(0)
    module = _module(MSTCN(D, K, num_stages=2, num_layers=4, num_maps=8)).train()
    # dynamo's guards decide recompilation whatever the backend: "eager" counts what inductor would compile
    compile_net(module, length_bucket, stream_batches=False, backend="eager")
    torch._dynamo.reset()
    before, counts = compiled_graphs(), []
    for item in _items(LENGTHS):
        batch = collate_videos([item], length_multiple=max(1, length_bucket))
        logits = module(batch["features"], batch["mask"], batch["labels"])
        module.loss_fn(logits, batch["labels"], batch["mask"])[0].backward()
        counts.append(compiled_graphs() - before)
    return counts


def test_a_dynamic_time_axis_compiles_one_graph_for_every_length():
    # torch.compile's default would compile two (the first length static, then a dynamic graph); inductor
    # specialises T of a conv net all the same (engine/compiling.py), which the buckets below bound
    assert _train_graphs(0) == [1] * len(LENGTHS)


def test_length_buckets_compile_one_static_graph_per_bucket():
    buckets = {-(-n // 64) for n in LENGTHS}
    counts = _train_graphs(64)
    # static graphs (dynamic=False): without the padding, one per length (six)
    assert counts[-1] == len(buckets) == 2 and counts == sorted(counts)


def test_padding_to_buckets_leaves_scores_and_gradients_unchanged(synth_root):
    results, grads, net = [], [], None
    for bucket in (0, 256):
        dm = FeatureDataModule(str(synth_root), 1, batch_size=3, length_bucket=bucket, bg_classes=("background",))
        if net is None:
            torch.manual_seed(0)
            net = MSTCN(dm.info.in_channels, dm.info.num_classes, num_stages=2, num_layers=4, num_maps=8, dropout=0.0)
        module = SegmentationModule(net, dm.info, SegmentationLoss(dm.info.num_classes), optimizer=torch.optim.Adam)
        batch = next(iter(dm._loader("train", shuffle=False)))
        if bucket:
            assert batch["features"].shape[-1] % bucket == 0 and batch["mask"].sum() == batch["lengths"].sum()
        net.zero_grad()
        module.loss_fn(module(batch["features"], batch["mask"], batch["labels"]), batch["labels"], batch["mask"])[0].backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
        net.eval()
        with torch.no_grad():
            for batch in dm.test_dataloader():
                module._collect(batch)
        net.train()
        results.append(module._score(module._gathered()))
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)
    assert {k: results[0][k] for k in ("acc", "edit", "f1@50")} == {k: results[1][k] for k in ("acc", "edit", "f1@50")}


def test_bad_length_bucket_and_compile_cache_are_refused_before_work():
    with pytest.raises(ConfigError, match="train.length_bucket"):
        check_train_options(TrainParams(length_bucket=-8))
    with pytest.raises(ConfigError, match="train.compile_cache"):
        check_train_options(TrainParams(compile_cache=""))


@pytest.fixture
def torch_cache_settings(monkeypatch):
    """configure_compile_cache changes process-wide settings: restore them after the test."""
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    saved = inductor_config.fx_graph_cache, functorch_config.enable_autograd_cache
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", os.environ.get("TORCHINDUCTOR_CACHE_DIR", "unset"))
    yield inductor_config, functorch_config
    inductor_config.fx_graph_cache, functorch_config.enable_autograd_cache = saved


def test_compile_cache_goes_under_the_users_cache_dir_or_is_off(tmp_path, monkeypatch, torch_cache_settings):
    inductor_config, functorch_config = torch_cache_settings
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert configure_compile_cache("auto") == (tmp_path / "xdg" / "streamseg" / "torch_compile").resolve()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "xdg" / "streamseg" / "torch_compile")
    assert inductor_config.fx_graph_cache and functorch_config.enable_autograd_cache
    assert configure_compile_cache(str(tmp_path / "mine")) == tmp_path / "mine" and (tmp_path / "mine").is_dir()
    assert configure_compile_cache("off") is None
    assert not inductor_config.fx_graph_cache and not functorch_config.enable_autograd_cache
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        configure_compile_cache(str(tmp_path / "file"))


@pytest.mark.parametrize("bucket", [0, 64])
def test_train_compile_wires_length_handling_and_the_cache(synth_root, tmp_path, monkeypatch, torch_cache_settings,
                                                           bucket):
    """What `streamseg train -o train.compile=true` builds (nothing compiles until the first step)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    configs = load_configs("synth", "mstcn", "quick")
    params, _ = resolve_params(configs, [f"data.root={synth_root}", "train.compile=true",
                                         f"train.length_bucket={bucket}", "data.num_videos=8"])
    dm, _, module = build(configs, params, dist.Launch(0, 0, 1, 0))
    assert module.dynamic_length == (bucket == 0) and dm.length_bucket == bucket
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "streamseg" / "torch_compile")


_COMPILE_ONCE = """
import sys
import torch
from torch._dynamo.utils import counters
from streamseg.engine.compiling import configure_compile_cache

configure_compile_cache(sys.argv[1])
f = torch.compile(lambda x: (x.sin() * 2 + 1).sum())
f(torch.randn(64))
print(counters["inductor"]["fxgraph_cache_hit"], counters["inductor"]["fxgraph_cache_miss"])
"""


@pytest.mark.slow
def test_a_second_process_reuses_the_compiled_kernels_from_the_cache_folder(tmp_path):
    import subprocess
    import sys

    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    runs = [subprocess.run([sys.executable, "-c", _COMPILE_ONCE, str(cache)], capture_output=True, text=True,
                           env=env, timeout=600) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-2000:]
    (hit1, miss1), (hit2, miss2) = (map(int, r.stdout.split()) for r in runs)
    assert (hit1, miss1) == (0, 1) and (hit2, miss2) == (1, 0)
    assert (cache / "fxgraph").is_dir()  # the kernels are in the folder given, not torch's /tmp default
