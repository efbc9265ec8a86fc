"""DiffAct's 50Salads sample-rate offsets (Finspire13/DiffAct main.py / dataset.py): the test-time mean over the
offsets (`data.test_offsets`: `Evaluation.add_offsets`, `metrics.upsample_centred`, the module's wiring with
DiffAct's post-processing on the mean) and the training offset drawn per (seed, epoch, video)
(`data.random_offset`: `data.zoom.OffsetAugmented`), both on in the 50Salads paper config only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from streamseg.config import load_configs, resolve_params
from streamseg.data import FeatureVideoDataset, TASLayout, collate_videos
from streamseg.data.zoom import EpochKeys, OffsetAugmented
from streamseg.engine.datamodule import DatasetInfo, FeatureDataModule
from streamseg.engine.evaluation import Evaluation
from streamseg.metrics import upsample, upsample_centred

from ..data.test_features import write_video

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tests/conftest.py


def test_upsample_centred_places_each_column_at_the_centre_of_its_group() -> None:
    # rate 2, 5 frames: columns at frames 1 and 3; frame 0 precedes the first, frame 2 is a tie (the
    # earlier column), frame 4 follows the last
    assert upsample_centred(np.array([7, 9]), 2, 5).tolist() == [7, 7, 7, 9, 9]
    # rate 8, 20 frames: columns at 4 and 12; frames 0..8 (8: the tie) take the first
    assert upsample_centred(np.array([1, 2]), 8, 20).tolist() == [1] * 9 + [2] * 11
    # rate 3 (odd: no ties), 9 frames: columns at 1, 4, 7; frame 2 is nearer 1, frame 3 nearer 4
    assert upsample_centred(np.array([0, 1, 2]), 3, 9).tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert upsample_centred(np.array([5]), 4, 6).tolist() == [5] * 6
    assert upsample_centred(np.array([3, 4]), 1, 2).tolist() == [3, 4]


def test_upsample_centred_is_scipys_nearest_interpolation_between_the_columns() -> None:
    from scipy.interpolate import interp1d

    for rate in (2, 3, 8):
        for length in range(2 * rate, 6 * rate):
            columns = length // rate  # the shortest offset's length, floor(T / r)
            pred = np.arange(columns) * 3 % 5
            ticks = np.arange(rate // 2, length - (rate - 1) // 2, rate)
            assert len(ticks) == columns
            expected = np.empty(length)
            expected[:ticks[0]] = pred[0]
            expected[ticks[-1]:] = pred[-1]
            expected[ticks[0]:ticks[-1] + 1] = interp1d(ticks, pred, kind="nearest")(np.arange(ticks[0], ticks[-1] + 1))
            assert upsample_centred(pred, rate, length).tolist() == expected.astype(int).tolist(), (rate, length)


def _offset_batch(tmp_path: Path, labels: list[int], rate: int) -> dict:
    write_video(tmp_path, "v", labels, num_features=len(labels))  # features[d, t] = 100 d + t
    ds = FeatureVideoDataset(TASLayout(tmp_path), ["v"], sample_rate=rate, test_offsets=True)
    return collate_videos([ds[0]])


def test_offset_features_are_the_subsamplings_from_each_offset(tmp_path: Path) -> None:
    batch = _offset_batch(tmp_path, [0, 1, 1, 2, 2], 2)
    offsets = batch["offset_features"][0]
    assert [x[0].tolist() for x in offsets] == [[0, 2, 4], [1, 3]]  # features[:, o::2]
    assert offsets[1][2].tolist() == [201, 203]
    assert "offset_features" not in FeatureVideoDataset(TASLayout(tmp_path), ["v"], sample_rate=2)[0]
    with pytest.raises(ValueError, match="pooling must be 'subsample'"):
        FeatureVideoDataset(TASLayout(tmp_path), ["v"], sample_rate=2, pooling="max", test_offsets=True)


def test_the_mean_over_offsets_is_taken_on_probabilities_then_placed_centred(tmp_path: Path) -> None:
    # 2 classes, rate 2, 5 frames: offset 0 sees frames 0, 2, 4 and offset 1 frames 1, 3.
    batch = _offset_batch(tmp_path, [0, 1, 1, 0, 0], 2)
    p1 = {0: [0.9, 0.2, 0.7], 1: [0.3, 0.6]}  # P(class 1) per column of each offset

    def forward(x: Tensor, mask: Tensor) -> Tensor:
        p = torch.tensor(p1[int(x[0, 0, 0])])
        return torch.log(torch.stack([1 - p, p]))[None, None]  # (S=1, B=1, K=2, T')

    calls = []
    info = DatasetInfo("t", ["a", "b"], [], 3, 15.0, 2)
    ev = Evaluation(info)
    ev.add_offsets(batch, forward, torch.device("cpu"), before_video=calls.append)
    # cut to 2 columns, mean P(class 1) = [(0.9 + 0.3) / 2, (0.2 + 0.6) / 2] = [0.6, 0.4] -> [1, 0]; columns
    # at frames 1 and 3, frame 2 a tie (the earlier)
    name, pred, gt = ev.videos[0]
    assert name == "v" and pred.tolist() == [1, 1, 1, 0, 0] and gt.tolist() == [0, 1, 1, 0, 0]
    assert calls == [0, 0]  # the video's seeds are set before each offset's pass
    # offset 0 alone, repeated (the plain evaluation): a different prediction
    assert upsample(np.array([1, 0, 1]), 2, 5).tolist() == [1, 1, 0, 0, 1]

    seen = []

    def post(log_mean: Tensor) -> Tensor:
        seen.append(log_mean)
        return -log_mean

    ev.add_offsets(batch, forward, torch.device("cpu"), post=post)
    torch.testing.assert_close(seen[0][0].exp(), torch.tensor([[0.4, 0.6], [0.6, 0.4]]))
    assert ev.videos[1][1].tolist() == [0, 0, 0, 1, 1]  # the argmax of what post returns


def test_the_module_post_processes_the_mean_of_diffacts_raw_offsets(tmp_path: Path, synth_root: Path) -> None:
    from streamseg.engine.recipes.diffact import diffact_module
    from streamseg.models import DiffAct
    from streamseg.models.diffact import median_filter

    labels = [0, 1, 1, 2, 2, 2, 0, 0, 1, 2, 2, 0, 1, 1]
    batch = _offset_batch(tmp_path, labels, 3)
    batch["indices"] = [4]
    params, _ = resolve_params(load_configs("synth", "diffact", "quick"),
                               [f"data.root={synth_root}", "model.class_weighting=false"])
    torch.manual_seed(0)
    net = DiffAct(3, 3, encoder_layers=3, encoder_maps=8, feature_layers=(0, 2), decoder_layers=2,
                  decoder_maps=8, time_emb_dim=16, sampling_steps=2, seed_by_video_index=True, sampling_seed=5,
                  postprocess="median", postprocess_size=3)
    info = DatasetInfo("t", ["a", "b", "c"], [], 3, 15.0, 3)
    module = diffact_module(net, params, info).eval()
    module._evaluation = Evaluation(info)
    filtered_inputs = []
    original = net._postprocess

    def recording(logits: Tensor, valid: Tensor, mode: str | None = None) -> Tensor:
        filtered_inputs.append(logits)
        return original(logits, valid, mode)

    net._postprocess = recording
    with torch.no_grad():
        module._collect(batch)
        probs = []
        for x in batch["offset_features"][0]:
            probs.append(F.softmax(net.sample(*_encoded(net, x), seed=5 + 4)[0].float(), dim=0))
    assert net.postprocess == "median"  # restored after the offsets' raw passes
    mean = torch.stack([p[:, :4] for p in probs]).mean(0)  # floor(14 / 3) = 4 columns
    assert len(filtered_inputs) == 1  # once, on the mean: not on each offset's output
    torch.testing.assert_close(filtered_inputs[0][0].exp(), mean)
    filtered = median_filter(mean.double(), 3)
    expected = upsample_centred(filtered.argmax(0).numpy(), 3, len(labels))
    assert module._evaluation.videos[0][1].tolist() == expected.tolist()


def _encoded(net, x: Tensor) -> tuple[Tensor, Tensor]:
    mask = torch.ones(1, 1, x.shape[-1])
    return net.encode(x[None], mask)[1], mask


def test_training_offsets_cover_the_rate_and_repeat_for_a_seed_epoch_and_video(tmp_path: Path) -> None:
    labels = [0, 1, 1, 2, 2, 2, 0, 0, 1, 2, 2, 0]
    write_video(tmp_path, "v", labels, num_features=12)
    ds = FeatureVideoDataset(TASLayout(tmp_path), ["v"], sample_rate=4)
    aug = OffsetAugmented(ds, seed=3)
    offsets = [aug.offset(0, epoch) for epoch in range(40)]
    assert set(offsets) == {0, 1, 2, 3}
    for epoch in (0, 7):
        o, item = offsets[epoch], aug[0, epoch]
        assert item["features"][0].tolist() == list(range(o, 12, 4))  # features[:, o::4]
        assert item["labels"].tolist() == labels[o::4] and item["full_labels"].tolist() == labels
    again = OffsetAugmented(ds, seed=3)
    assert [again.offset(0, e) for e in range(40)] == offsets  # a resumed run draws the same
    assert [OffsetAugmented(ds, seed=4).offset(0, e) for e in range(40)] != offsets


def test_offsets_are_off_by_default_and_on_in_the_50salads_diffact_paper_config(synth_root: Path) -> None:
    from streamseg.config import ConfigError

    params, _ = resolve_params(load_configs("50salads", "diffact", "paper"))
    assert params.data.test_offsets and params.data.random_offset and params.data.sample_rate == 8
    for ds, model, exp in (("gtea", "diffact", "paper"), ("breakfast", "diffact", "paper"),
                           ("50salads", "mstcn", "paper")):
        params, _ = resolve_params(load_configs(ds, model, exp))
        assert not params.data.test_offsets and not params.data.random_offset

    params, _ = resolve_params(load_configs("synth", "diffact", "quick"),
                               [f"data.root={synth_root}", "data.sample_rate=2", "data.test_offsets=true",
                                "data.random_offset=true"])
    dm = load_configs("synth", "diffact", "quick").dataset.build_datamodule(params.data, params.train)
    dm.setup()
    train = dm.train_dataloader()
    assert isinstance(train.dataset, OffsetAugmented) and isinstance(train.sampler, EpochKeys)
    batch = next(iter(dm.test_dataloader()))
    assert len(batch["offset_features"][0]) == 2

    plain = FeatureDataModule(str(synth_root), 1, sample_rate=2)
    assert not isinstance(plain.train_dataloader().dataset, OffsetAugmented)
    assert "offset_features" not in next(iter(plain.test_dataloader()))
    with pytest.raises(ConfigError, match="data.pooling=subsample"):
        FeatureDataModule(str(synth_root), 1, sample_rate=2, pooling="max", test_offsets=True)
