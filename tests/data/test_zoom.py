"""C2F-TCN's zoom augmentation (`streamseg.data.zoom`): the draw on hand-worked cases, the zoomed item, and the
switch (`data.zoom_augment`: off by default, on in the C2F-TCN paper configs) through the datamodule."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from streamseg.data import FeatureVideoDataset, TASLayout
from streamseg.data.zoom import Zoom, ZoomAugmented, draw_zoom

from .test_features import write_video


class Scripted:
    """A `numpy.random.Generator` stand-in returning given draws and recording the bounds asked for."""

    def __init__(self, coin: int, uniforms: list[float]) -> None:
        self.coin, self.uniforms, self.bounds = coin, list(uniforms), []

    def integers(self, low: int, high: int) -> int:
        assert (low, high) == (0, 2)
        return self.coin

    def uniform(self, low: float, high: float) -> float:
        self.bounds.append((low, high))
        return self.uniforms.pop(0)


def test_tails_keep_the_video_as_it_is() -> None:
    rng = Scripted(1, [])
    assert draw_zoom(rng, 2000, 4, window=600) == Zoom(0, 2000, 4) and rng.bounds == []


def test_a_gtea_video_zooms_between_the_group_that_fits_a_window_and_twice_the_rate() -> None:
    # GTEA: groups of 4, windows of 600 pooled frames; 2,000 frames need groups >= ceil(2000 / 600) = 4 to fit
    # one window, above the 0.5x zoom's int(4 / 2) = 2; the 2x zoom's int(4 / 0.5) = 8 is the top.
    # No crop (cut 1.0): start ~ U(0, 0), length ~ U(1, 1). exp(log 6.5) = 6.5 -> groups of 6.
    rng = Scripted(0, [0.0, 1.0, math.log(6.5)])
    assert draw_zoom(rng, 2000, 4, window=600) == Zoom(0, 2000, 6)
    assert rng.bounds == [(0.0, 0.0), (1.0, 1.0), (math.log(4), math.log(8))]
    # 1,000 frames fit with groups of ceil(1000 / 600) = 2: the 0.5x zoom's 2 is the bottom
    rng = Scripted(0, [0.0, 1.0, math.log(2)])
    assert draw_zoom(rng, 1000, 4, window=600) == Zoom(0, 1000, 2)
    assert rng.bounds[2] == (math.log(2), math.log(8))


def test_a_crop_keeps_the_drawn_share_of_the_frames() -> None:
    # cut 0.5: start ~ U(0, 0.5) -> 0.25, length ~ U(0.5, 1 - 0.25) -> 0.5: frames [int(12 * 0.25),
    # int(12 * 0.75)) = [3, 9); groups of 2 zoom to int(2 / 2) = 1 .. int(2 / 0.5) = 4 -> exp(log 3.9) -> 3
    rng = Scripted(0, [0.25, 0.5, math.log(3.9)])
    assert draw_zoom(rng, 12, 2, crop=0.5) == Zoom(3, 9, 3)
    assert rng.bounds == [(0.0, 0.5), (0.5, 0.75), (0.0, math.log(4))]


def test_real_draws_cover_the_zoom_range_half_of_the_time() -> None:
    rng = np.random.default_rng(0)
    draws = [draw_zoom(rng, 1000, 4, window=600) for _ in range(400)]
    zoomed = [d for d in draws if d != Zoom(0, 1000, 4)]
    # a fair coin, then groups of 4 with probability log(5 / 4) / log(8 / 2) = 0.16: 400 x 0.5 x 0.84 = 168
    assert 140 < len(zoomed) < 196
    assert {d.rate for d in zoomed} == {2, 3, 5, 6, 7}  # floor of a log-uniform draw in [2, 8), 4 aside
    assert all((d.start, d.end) == (0, 1000) for d in draws)


def test_a_zoomed_item_pools_the_drawn_frames_in_the_drawn_groups(tmp_path: Path) -> None:
    labels = [0, 1, 1, 2, 2, 2, 0, 0, 1, 2, 2, 0]
    write_video(tmp_path, "v", labels, num_features=12)  # features[d, t] = 100 d + t
    ds = FeatureVideoDataset(TASLayout(tmp_path), ["v"], sample_rate=2, pooling="max")
    features, full = ds.load(0)
    item = ds.make_item(0, features, full, 3, 9, 4)  # frames 3..6 and 7..8
    np.testing.assert_array_equal(item["features"].numpy(), [[6, 8], [106, 108], [206, 208]])
    assert item["labels"].tolist() == [2, 0]  # [2, 2, 2, 0] -> 2; [0, 1]: a tie -> the smallest id
    assert item["full_labels"].tolist() == labels
    plain = ds.make_item(0, features, full)
    assert plain["labels"].tolist() == ds[0]["labels"].tolist() == [0, 1, 2, 0, 1, 0]  # ties to the smallest id

    aug = ZoomAugmented(ds, seed=3, window=None)
    items = {epoch: aug[0, epoch] for epoch in range(8)}
    lengths = {e: it["features"].shape[1] for e, it in items.items()}
    assert len(set(lengths.values())) > 1 and 6 in lengths.values()  # plain (ceil(12 / 2)) and zoomed
    again = aug[0, 5]
    np.testing.assert_array_equal(again["features"].numpy(), items[5]["features"].numpy())  # (seed, epoch, video)


def test_zoom_is_off_by_default_and_on_in_the_c2ftcn_paper_configs(synth_root: Path) -> None:
    from streamseg.config import ConfigError, load_configs, resolve_params
    from streamseg.data.zoom import EpochKeys
    from streamseg.engine.datamodule import FeatureDataModule

    for ds, window in (("gtea", 600), ("50salads", 960), ("breakfast", 1200)):
        params, _ = resolve_params(load_configs(ds, "c2ftcn", "paper"))
        assert params.data.zoom_augment and params.data.zoom_window == window  # follows model.window
        assert params.data.zoom_range == (0.5, 2.0) and params.data.zoom_crop == 1.0
    for ds, model, exp in (("synth", "c2ftcn", "quick"), ("gtea", "mstcn", "paper")):
        params, _ = resolve_params(load_configs(ds, model, exp))
        assert not params.data.zoom_augment

    plain = FeatureDataModule(str(synth_root), 1, sample_rate=2, pooling="max", seed=0)
    loader = plain.train_dataloader()
    assert isinstance(loader.dataset, FeatureVideoDataset) and not isinstance(loader.sampler, EpochKeys)

    params, _ = resolve_params(load_configs("synth", "c2ftcn", "quick"),
                               [f"data.root={synth_root}", "data.zoom_augment=true", "data.sample_rate=2"])
    assert params.data.zoom_window == 384  # synth c2ftcn quick's model.window
    dm = load_configs("synth", "c2ftcn", "quick").dataset.build_datamodule(params.data, params.train)
    dm.setup()
    loader = dm.train_dataloader()
    assert isinstance(loader.dataset, ZoomAugmented) and loader.dataset.window == 384
    layout, names = dm.layout, dm.names["train"]
    plain_len = {n: -(-len(layout.load_labels(n)) // 2) for n in names}
    seen = []
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            seen += [(n, int(t)) for n, t in zip(batch["names"], batch["lengths"])]
    assert any(t != plain_len[n] for n, t in seen) and any(t == plain_len[n] for n, t in seen)

    with pytest.raises(ConfigError, match="data.zoom_range"):
        FeatureDataModule(str(synth_root), 1, zoom=dict(window=None, zoom=(2.0, 0.5), crop=1.0))
