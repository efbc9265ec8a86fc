"""ASRF's official loss: class weights and boundary pos_weight (libs/class_weight.py), the Gaussian-similarity
T-MSE (libs/loss_fn/tmse.py), ASRFLoss's terms, and the recipe that feeds them from the training split.
(Architecture, refinement and weight loading: tests/models/test_zoo_params.py.)"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from streamseg.config import load_configs, resolve_params
from streamseg.models import ASRF, ASRFLoss, SegmentationLoss
from streamseg.models.asrf import boundary_pos_weight, boundary_targets, class_weights, gaussian_similarity_tmse

# Two hand-made training videos, K = 4; class 3 never occurs.
#   counts 0: 5, 1: 2, 2: 3, 3: 0 of 10 frames -> freq (.5, .2, .3, 0)
#   torch.median over the 4 values (0, .2, .3, .5): the lower middle .2 (np.median would give .25)
#   boundaries: video 0 frames 0, 3, 5; video 1 frames 0, 2 -> 5 of 10 frames
VIDEOS = [np.array([0, 0, 0, 1, 1, 2]), np.array([2, 2, 0, 0])]


def test_class_weights_are_the_median_frequency_ones() -> None:
    weights = class_weights(VIDEOS, 4)
    torch.testing.assert_close(weights, torch.tensor([0.2 / 0.5, 0.2 / 0.2, 0.2 / 0.3, 0.0]))
    # the official formula literally (get_class_weight), but for the absent class (inf there, 0 here)
    freq = torch.tensor([5, 2, 3, 0]).float() / 10
    official = torch.median(freq) / freq
    torch.testing.assert_close(weights[:3], official[:3])
    assert math.isinf(official[3])


def test_class_weights_refuse_bad_labels() -> None:
    with pytest.raises(ValueError, match=r"labels of video 1 must lie in \[0, 3\)"):
        class_weights([np.array([0, 1]), np.array([2, 3])], 3)
    with pytest.raises(ValueError, match="2 of 3 classes never occur"):
        class_weights([np.array([1, 1, 1])], 3)
    with pytest.raises(ValueError, match="no labelled frames"):
        class_weights([np.array([], dtype=np.int64)], 3)


def test_boundary_pos_weight_is_frames_over_boundary_frames() -> None:
    assert boundary_pos_weight(VIDEOS) == pytest.approx(10 / 5)
    # the same count as the boundary targets the loss trains on
    labels = torch.tensor([[0, 0, 0, 1, 1, 2]])
    assert boundary_targets(labels, torch.ones(1, 6)).sum() == 3
    assert boundary_pos_weight([np.array([4] * 7)]) == pytest.approx(7.0)  # one segment: only frame 0
    with pytest.raises(ValueError, match="no labelled frames"):
        boundary_pos_weight([])


def _gstmse_by_hand(logits: torch.Tensor, features: torch.Tensor, lengths: list[int], sigma: float,
                    clamp: float) -> float:
    """GaussianSimilarityTMSE.forward written out frame by frame (valid frames = the first `lengths[b]`): the
    official normalises each shifted copy, y[:, 1:] and y[:, :-1], over time (its dim 1 of a (K, T) tensor)."""
    total = 0.0
    for b, n in enumerate(lengths):
        y = logits[b, :, :n].double()
        later, earlier = F.log_softmax(y[:, 1:], dim=1), F.log_softmax(y[:, :-1], dim=1)
        x = features[b, :, :n].double()
        terms = []
        for t in range(n - 1):
            dist = math.sqrt(sum((x[d, t + 1] - x[d, t]).item() ** 2 for d in range(x.shape[0])))
            s = math.exp(-dist / (2 * sigma**2))
            for k in range(y.shape[0]):
                terms.append(s * min((later[k, t] - earlier[k, t]).item() ** 2, clamp))
        total += sum(terms) / len(terms)
    return total / len(lengths)


def test_gaussian_similarity_tmse_normalises_over_time_as_the_official() -> None:
    """One class, logits (0, ln 2, 0): over classes every log-probability is 0 (loss 0); the official's
    log_softmax over time gives y[1:] = (ln 2, 0) -> (ln 2/3, ln 1/3) and y[:-1] = (0, ln 2) -> (ln 1/3,
    ln 2/3): both differences are +-ln 2. Features (0, 0, 2): similarities exp(0) = 1 and exp(-2 / 2) = 1/e.
    Loss = mean(1 * ln(2)^2, ln(2)^2 / e) = ln(2)^2 (1 + 1/e) / 2."""
    logits = torch.tensor([[[0.0, math.log(2.0), 0.0]]])
    features = torch.tensor([[[0.0, 0.0, 2.0]]])
    got = gaussian_similarity_tmse(logits, features, torch.ones(1, 3, dtype=torch.bool))
    assert got.item() == pytest.approx(math.log(2) ** 2 * (1 + math.exp(-1)) / 2, rel=1e-6)


def test_gaussian_similarity_tmse_equals_the_formula() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = 4 * torch.randn(2, 3, 6, generator=gen)  # scaled so that the clamp engages on some frames
    features = 0.5 * torch.randn(2, 2, 6, generator=gen)
    logits[1, :, 4:] = 100.0  # padding of video 1 (4 valid frames): must not count
    valid = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    logits.requires_grad_(True)
    for sigma, clamp in ((1.0, 16.0), (0.7, 4.0)):
        got = gaussian_similarity_tmse(logits, features, valid, sigma=sigma, clamp=clamp)
        assert got.item() == pytest.approx(_gstmse_by_hand(logits.detach(), features, [6, 4], sigma, clamp), rel=1e-5)
    gaussian_similarity_tmse(logits, features, valid).backward()
    # neither frame of a pair is detached (MS-TCN detaches the earlier one, so frame 0 would get no gradient)
    assert logits.grad[:, :, 0].abs().sum() > 0
    assert logits.grad[1, :, 4:].abs().sum() == 0
    # identical neighbours weigh 1, far apart ones ~0
    flat = torch.zeros(1, 2, 6)
    assert gaussian_similarity_tmse(logits[:1].detach(), flat, valid[:1]).item() == pytest.approx(
        _gstmse_by_hand(logits[:1].detach(), flat, [6], 1.0, 16.0), rel=1e-6
    )
    assert gaussian_similarity_tmse(logits[:1].detach(), 1e4 * features[:1], valid[:1]).item() < 1e-12


def _model_and_batch():
    torch.manual_seed(0)
    model = ASRF(6, 5, num_layers=3, num_maps=8, num_stages_asb=3, num_stages_brb=2).train()
    labels = torch.tensor([[0, 0, 0, 1, 1, 3, 3, 3, -100, -100], [2, 2, 4, 4, 4, 4, 0, 0, 0, 0]])
    mask = (labels >= 0).float()
    x = torch.randn(2, 6, 10) * 0.3
    return model, x, labels, mask


def test_asrf_loss_official_terms() -> None:
    model, x, labels, mask = _model_and_batch()
    weights = torch.tensor([0.5, 2.0, 1.0, 3.0, 0.25])
    loss_fn = ASRFLoss(model, 5, smooth_weight=1.0, boundary_weight=0.1, pos_weight=7.5,
                       class_weights=weights, smoothing="gstmse")
    logits, _ = model(x, (), mask[:, None])
    loss, parts = loss_fn(logits, labels, mask)
    assert loss.item() == pytest.approx((parts["ce"] + parts["smooth"] + parts["boundary"]).item(), rel=1e-6)
    lg, b = logits.detach(), model.boundary_logits.detach()
    valid = mask > 0
    official_ce = nn.CrossEntropyLoss(weight=weights, ignore_index=-100)  # libs/loss_fn ActionSegmentationLoss
    ce = sum(official_ce(lg[s], labels) for s in range(3)) / 3
    smooth = sum(_gstmse_by_hand(lg[s], x, [8, 10], 1.0, 16.0) for s in range(3)) / 3
    target = boundary_targets(labels, mask)
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(7.5))  # BoundaryRegressionLoss
    boundary = 0.1 * sum((bce(b[s, 0, 0][valid[0]], target[0][valid[0]]) + bce(b[s, 1, 0], target[1])) / 2
                         for s in range(2)) / 2
    assert parts["ce"].item() == pytest.approx(ce.item(), rel=1e-5)
    assert parts["smooth"].item() == pytest.approx(smooth, rel=1e-5)
    assert parts["boundary"].item() == pytest.approx(boundary.item(), rel=1e-5)
    assert int(parts["frames"]) == 18
    loss.backward()
    assert model.brb[0].conv_out.weight.grad.abs().sum() > 0
    model.input_features = None
    with pytest.raises(RuntimeError, match="input_features do not belong"):
        loss_fn(logits, labels, mask)
    with pytest.raises(ValueError, match=r"class_weights must have shape \(5,\)"):
        ASRFLoss(model, 5, class_weights=torch.ones(4))
    with pytest.raises(ValueError, match="smoothing must be one of"):
        ASRFLoss(model, 5, smoothing="tmse")


def test_asrf_loss_defaults_keep_the_mstcn_class_loss() -> None:
    """Without class weights and with "mstcn" smoothing (the defaults), the class part is MS-TCN's
    SegmentationLoss averaged over stages, as before the official terms were added."""
    model, x, labels, mask = _model_and_batch()
    logits, _ = model(x, (), mask[:, None])
    _, parts = ASRFLoss(model, 5)(logits, labels, mask)
    _, ref = SegmentationLoss(5)(logits, labels, mask)
    assert parts["ce"].item() == pytest.approx(ref["ce"].item() / 3, rel=1e-6)
    assert parts["smooth"].item() == pytest.approx(ref["smooth"].item() / 3, rel=1e-6)


def _labels_by_hand(root: Path) -> list[list[str]]:
    names = (root / "splits" / "train.split1.bundle").read_text().split()
    return [(root / "groundTruth" / n).read_text().split() for n in names]


def test_recipe_passes_the_official_weights_to_the_loss(synth_root: Path) -> None:
    from streamseg.engine.recipes.asrf import asrf_module
    from streamseg.engine.runner import build_net

    configs = load_configs("synth", "asrf", "quick", None)
    params, _ = resolve_params(configs, [f"data.root={synth_root}", "model.num_layers=2", "model.num_maps=4"])
    classes = [line.split()[1] for line in (synth_root / "mapping.txt").read_text().splitlines()]
    videos = _labels_by_hand(synth_root)
    frames = sum(len(v) for v in videos)
    boundaries = sum(1 + sum(a != b for a, b in zip(v[1:], v[:-1])) for v in videos)
    counts = np.array([sum(v.count(c) for v in videos) for c in classes], dtype=np.float64)
    freq = counts / counts.sum()
    expected = np.where(counts > 0, np.sort(freq)[(len(classes) - 1) // 2] / np.maximum(freq, 1e-300), 0.0)

    info = configs.dataset.build_datamodule(params.data, params.train).info
    module = asrf_module(build_net(configs.model, params.model, info), params, info)
    loss = module.loss_fn.loss  # built on first use (training)
    assert isinstance(loss, ASRFLoss) and loss.model is module.net
    assert loss.pos_weight == pytest.approx(frames / boundaries)
    torch.testing.assert_close(loss.class_weights, torch.from_numpy(expected).float())
    assert (loss.smoothing, loss.smooth_weight, loss.boundary_weight) == ("gstmse", 1.0, 0.1)
    assert module.hparams["asrf_pos_weight"] == pytest.approx(frames / boundaries)
    assert module.hparams["asrf_class_weights"] == pytest.approx(expected.tolist(), abs=1e-6)

    params, _ = resolve_params(configs, [f"data.root={synth_root}", "model.class_weight=false",
                                         "model.smoothing=mstcn", "model.smooth_weight=0.15"])
    module = asrf_module(build_net(configs.model, params.model, info), params, info)
    loss = module.loss_fn.loss
    assert loss.class_weights is None and module.hparams["asrf_class_weights"] is None
    assert (loss.smoothing, loss.smooth_weight) == ("mstcn", 0.15)
    assert loss.pos_weight == pytest.approx(frames / boundaries)  # always the official one
    with pytest.raises(TypeError, match="trains ASRF"):
        asrf_module(nn.Linear(2, 2), params, info)


def test_the_recipe_reads_no_training_labels_until_it_trains(synth_root: Path, tmp_path: Path) -> None:
    """Scoring a checkpoint (`streamseg test --ckpt none`) builds the module: it must not need the training
    split, whose labels only the loss's class weights and pos_weight use."""
    import shutil

    from streamseg.engine.recipes.asrf import asrf_module
    from streamseg.engine.runner import build_net

    root = tmp_path / "no_train"
    shutil.copytree(synth_root, root)
    (root / "splits" / "train.split1.bundle").write_text("")  # no training video: no labels to count
    configs = load_configs("synth", "asrf", "quick", None)
    params, _ = resolve_params(configs, [f"data.root={root}", "model.num_layers=2", "model.num_maps=4"])
    info = configs.dataset.build_datamodule(params.data, params.train).info
    module = asrf_module(build_net(configs.model, params.model, info), params, info)  # no error
    with pytest.raises(ValueError, match="no labelled frames"):
        module.loss_fn.loss  # training would need them


def test_official_tie_rule_keeps_the_previous_segments_label_when_no_logit_sum_is_positive() -> None:
    """Boundary peaks at frames 0 and 2 -> segments [0, 2) and [2, 6). Frame labels 2 2 | 0 0 1 1: the
    second segment ties 0 and 1. Raw logit sums there: class 0: -1 - 1 - 3 - 3 = -8, class 1: -3 - 3 - 1 -
    0.5 = -7.5, neither > 0, so the official loop never picks one and the segment keeps the label of the one
    before (2). The probability rule picks class 1 (larger softmax sum: its frames 4, 5 are surer)."""
    from streamseg.models.asrf import refine_with_boundaries

    cls = torch.tensor([[-1, -1, -1, -1, -3, -3], [-1, -1, -3, -3, -1, -0.5], [2, 2, -5, -5, -5, -5]])[None]
    bound = torch.tensor([[0.0, -5, 3, -5, -5, -5]])
    assert refine_with_boundaries(cls, bound, tie_rule="probability").tolist() == [[2, 2, 1, 1, 1, 1]]
    assert refine_with_boundaries(cls, bound, tie_rule="official").tolist() == [[2, 2, 2, 2, 2, 2]]
    # a positive sum: frame labels 2 2 | 0 0 1 1 again (frame 3 ties 0.2 / 0.2: argmax takes class 0); sums
    # over [2, 6): class 0: 1.0 + 0.2 - 2 - 2 = -2.8, class 1: 0.3 + 0.2 + 0.4 + 0.4 = 1.3 > 0 -> class 1
    cls2 = torch.tensor([[3, 3, 1.0, 0.2, -2, -2], [0, 0, 0.3, 0.2, 0.4, 0.4], [0, 0, -5, -5, -5, -5]])[None]
    assert refine_with_boundaries(cls2, bound, tie_rule="official").tolist() == [[0, 0, 1, 1, 1, 1]]
    # a first segment with no positive sum: the smallest tied id (the official code fails there)
    first = torch.tensor([[-1.0, -2], [-2, -1]])[None]
    assert refine_with_boundaries(first, torch.zeros(1, 2), tie_rule="official").tolist() == [[0, 0]]
