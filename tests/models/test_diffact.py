"""DiffAct: parameter counts of the official configs, equality with the official forward passes and DDIM
algorithm, deterministic sampling, the training loss and its targets, post-processing, and a tiny run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from streamseg.config.loader import import_file, load_configs, resolve_params
from streamseg.models import DiffAct, DiffActLoss
from streamseg.models.diffact import median_filter, purge
from streamseg.models.diffact_loss import boundary_targets, gaussian_filter1d, soft_targets

from ..conftest import streamseg

REPO = Path(__file__).resolve().parents[2]
D, K = 6, 5


pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tests/conftest.py


def _tiny(**kw) -> DiffAct:
    args = dict(encoder_layers=6, encoder_maps=8, feature_layers=(1, 3, 5), decoder_layers=3, decoder_maps=8,
                time_emb_dim=16, sampling_steps=4)
    args.update(kw)
    return DiffAct(D, K, **args)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------------ parameter counts


def test_parameter_counts_of_the_gtea_config() -> None:
    """1,203,184 + 114 K (arithmetic in the module docstring); the encoder alone 544,576 + 65 K."""
    for k, expected in ((11, 1_204_438), (19, 1_205_350), (48, 1_208_656)):
        model = DiffAct(2048, k)
        assert _count(model) == expected == 1_203_184 + 114 * k
        assert _count(model.encoder) == 544_576 + 65 * k
    assert _count(DiffAct(2048, 11).encoder) == 545_291  # tas-reference.md §2


@pytest.mark.parametrize(
    "dataset, classes, expected, encoder",
    [("gtea", 11, 1_204_438, 545_291), ("50salads", 19, 1_214_566, 545_811), ("breakfast", 48, 11_912_800, 8_419_632)],
)
def test_experiment_configs_build_the_official_models(dataset: str, classes: int, expected: int, encoder: int) -> None:
    """model_configs/diffact.py defaults + exp_configs/<dataset>/diffact_paper.py = each dataset's official
    config (counts measured with the official classes, tas-reference.md §2)."""
    configs = load_configs(dataset, "diffact", "paper", None)
    params, _ = resolve_params(configs)
    model = configs.model.build_model(params.model, 2048, classes)
    assert (_count(model), _count(model.encoder)) == (expected, encoder)
    assert model.num_timesteps == 1000 and model.sampling_steps == 25


def test_official_names_and_weights_load_through_the_model_config(tmp_path: Path) -> None:
    model = _tiny()
    keys = set(model.state_dict())
    for key in ("encoder.conv_in.weight", "encoder.encoder.layers.5.conv_block.0.weight",
                "encoder.encoder.layers.0.att_linear_v.bias", "encoder.encoder.layers.2.ffn_block.2.weight",
                "decoder.time_in.1.weight", "decoder.module.time_proj.weight",
                "decoder.module.layers.2.att_linear_k.weight", "decoder.conv_out.bias",
                "betas", "alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_mean_coef2"):
        assert key in keys, key
    path = tmp_path / "epoch-100.model"
    torch.save(model.state_dict(), path)
    cfg = import_file(REPO / "model_configs" / "diffact.py", "_test_model_config_diffact")
    p = cfg.Params(encoder_layers=6, encoder_maps=8, feature_layers=(1, 3, 5), decoder_layers=3, decoder_maps=8,
                   time_emb_dim=16, weights=str(path))
    loaded = cfg.build_model(p, D, K)
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


# ---------------------------------------------------------------------------- the official forward passes
# The official algorithm (DiffAct model.py), batch 1 and no padding, on our modules' weights: attention by
# an index table over the zero-padded sequence, a keep mask from the indices, nn.InstanceNorm1d.


def _official_attention(layer, x, cross):
    length, pad, channels = x.shape[2], layer.pad, layer.channels
    idx = torch.tensor([[i + pad for i in range(q - pad, q + pad + 1, layer.dilation)] for q in range(length)])
    qk = x if cross is None else torch.cat([x, cross], 1)
    q = layer.att_linear_q(qk)
    k = F.pad(layer.att_linear_k(qk), (pad, pad))[:, :, idx.reshape(-1)].reshape(1, channels, length, -1)
    v = F.pad(layer.att_linear_v(x), (pad, pad))[:, :, idx.reshape(-1)].reshape(1, channels, length, -1)
    att = torch.einsum("ncl,nclk->nlk", q, k)
    keep = ((idx >= pad) & (idx < length + pad)).float()
    att = F.softmax(att / np.sqrt(channels) + torch.log(keep + 1e-6), 2) * keep
    return torch.einsum("nlk,nclk->ncl", att, v)


def _official_layer(layer, x, cross=None):
    out = layer.conv_block(x) + _official_attention(layer, x, cross)
    return x + layer.ffn_block(nn.InstanceNorm1d(layer.channels)(out))


def _official_encoder(enc, x, indices):
    h, feats = enc.conv_in(x), []
    for i, layer in enumerate(enc.encoder.layers):
        h = _official_layer(layer, h)
        if i in indices:
            feats.append(h)
    return enc.conv_out(h), torch.cat(feats, 1)


def _official_decoder(dec, feats, t, event):
    half = dec.time_emb_dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    emb = t.float()[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1)
    swish = lambda v: v * torch.sigmoid(v)  # noqa: E731
    emb = dec.time_in[1](swish(dec.time_in[0](emb)))
    h = dec.conv_in(event) + dec.module.time_proj(swish(emb))[:, :, None]
    for layer in dec.module.layers:
        h = _official_layer(layer, h, feats)
    return dec.conv_out(h)


@pytest.mark.parametrize("length", [37, 100])  # the deepest dilations (32 x 2 taps) reach beyond 37 frames
def test_encoder_and_decoder_match_the_official_forward(length: int) -> None:
    torch.manual_seed(0)
    model = _tiny().eval()
    x = torch.randn(1, D, length)
    mask = torch.ones(1, 1, length)
    with torch.no_grad():
        logits, feats = model.encode(x, mask)
        ref_logits, ref_feats = _official_encoder(model.encoder, x, (1, 3, 5))
        torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(feats, ref_feats, atol=1e-5, rtol=1e-5)
        event = torch.rand(1, K, length)
        t = torch.tensor([417])
        expected = _official_decoder(model.decoder, feats, t, event)
        torch.testing.assert_close(model.denoise(feats, t, event, mask), expected, atol=1e-5, rtol=1e-5)


def _official_alphas_cumprod(timesteps: int, s: float = 0.008) -> np.ndarray:
    x = np.linspace(0, timesteps, timesteps + 1)
    ac = np.cos(((x / timesteps) + s) / (1 + s) * np.pi * 0.5) ** 2
    betas = np.clip(1 - (ac[1:] / ac[:-1]), 0, 0.999)
    return np.cumprod(1.0 - betas)


def _official_ddim(model, feats: torch.Tensor, mask: torch.Tensor, seed: int, times: list[int]) -> torch.Tensor:
    """Finspire13/DiffAct model.py ddim_sample re-stated for one unpadded video: the global generator seeded,
    the start drawn by randn of the float32 shape, each step's noise by randn_like of the current state
    (float64 after the first update, the (1, 1, 1) float64 coefficients promoting it)."""
    scale, eta = model.scale, model.ddim_eta
    torch.manual_seed(seed)
    xt = torch.randn(1, K, feats.shape[-1])
    for time, time_next in zip(times[:-1], times[1:]):
        tc = torch.full((1,), time, dtype=torch.long)
        event = (xt.clamp(-scale, scale) / scale + 1) / 2
        out = model.denoise(feats, tc, event.float(), mask)
        x0 = ((F.softmax(out, 1) * 2 - 1.0) * scale).clamp(-scale, scale)
        if time_next < 0:
            break
        coef = model.sqrt_recip_alphas_cumprod.gather(-1, tc).reshape(1, 1, 1)
        coef_m1 = model.sqrt_recipm1_alphas_cumprod.gather(-1, tc).reshape(1, 1, 1)
        eps = (coef * xt - x0) / coef_m1
        a, a_next = model.alphas_cumprod[time], model.alphas_cumprod[time_next]
        sigma = eta * ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()
        c = (1 - a_next - sigma**2).sqrt()
        xt = x0 * a_next.sqrt() + c * eps + sigma * torch.randn_like(xt)
    return out


def test_ddim_sampling_draws_the_official_noise() -> None:
    """The same seed gives exactly the official sampler's logits: float32 draws for the start and the
    first step, float64 draws after (a float32-only sampler differs from the second step on)."""
    torch.manual_seed(0)
    model = _tiny(timesteps=200, sampling_steps=6, snr_scale=0.5).eval()
    x, mask = torch.randn(1, D, 30), torch.ones(1, 1, 30)
    times = [199, 165, 132, 99, 65, 32, -1]  # int(linspace(-1, 199, 7)) reversed
    with torch.no_grad():
        _, feats = model.encode(x, mask)
        got = model.sample(feats, mask, seed=11)
        expected = _official_ddim(model, feats, mask, 11, times)
        assert torch.equal(got, expected)
        # the official's float64 state makes randn_like draw float64: not the float32 numbers of that seed
        torch.manual_seed(11)
        f32 = torch.randn(3, K, 30)[2]
        torch.manual_seed(11)
        torch.randn(2, K, 30)
        assert not torch.allclose(torch.randn(K, 30, dtype=torch.float64).float(), f32)


def test_seed_by_video_index_seeds_each_video_with_its_index() -> None:
    """Official set_sampling_seed: video i of the test list samples with seed i (here sampling_seed + i)."""
    torch.manual_seed(0)
    model = _tiny(timesteps=200, sampling_steps=4, seed_by_video_index=True, sampling_seed=0).eval()
    x = torch.randn(2, D, 20)
    times = [199, 149, 99, 49, -1]  # int(linspace(-1, 199, 5)) reversed
    with torch.no_grad():
        with pytest.raises(ValueError, match="set_video_indices"):
            model(x, ())
        model.set_video_indices([3, 5])
        got, _ = model(x, ())
        _, feats = model.encode(x, torch.ones(2, 1, 20))
        for b, index in enumerate((3, 5)):  # (batched convolutions may round differently: a tolerance)
            expected = _official_ddim(model, feats[b:b + 1], torch.ones(1, 1, 20), index, times)
            torch.testing.assert_close(got[1, b], expected[0], atol=1e-5, rtol=1e-5)
            other = _official_ddim(model, feats[b:b + 1], torch.ones(1, 1, 20), index + 1, times)
            assert not torch.allclose(got[1, b], other[0], atol=1e-3)


# ---------------------------------------------------------------------------------------- determinism


def test_sampling_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(0)
    model = _tiny().eval()
    x = torch.randn(2, D, 25)
    with torch.no_grad():
        rng = torch.get_rng_state()
        a, _ = model(x, ())
        assert torch.equal(torch.get_rng_state(), rng)
        b, _ = model(x, ())
        assert a.shape == (2, 2, K, 25)
        assert torch.equal(a, b)
        model.sampling_seed = 1
        c, _ = model(x, ())
        assert torch.equal(c[0], a[0]) and not torch.allclose(c[1], a[1])  # encoder same, sampling not
        model.sampling_seed = None  # the global RNG
        torch.manual_seed(5)
        d, _ = model(x, ())
        e, _ = model(x, ())
        torch.manual_seed(5)
        f, _ = model(x, ())
    assert not torch.allclose(d[1], e[1]) and torch.equal(d, f)


def test_training_forward_keeps_the_features_for_the_loss() -> None:
    model = _tiny().train()
    logits, state = model(torch.randn(2, D, 12), ())
    assert logits.shape == (1, 2, K, 12) and state == ()
    assert model.features is not None and model.features.shape == (2, 3 * 8, 12)
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, D, 12), ())
    assert model.features is None
    with pytest.raises(RuntimeError, match="no conditioning features of this batch"):
        DiffActLoss(model, K)(logits, torch.zeros(2, 12, dtype=torch.long), torch.ones(2, 12))


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="feature_layers"):
        _tiny(feature_layers=(6,))
    with pytest.raises(ValueError, match="cond_types"):
        _tiny(cond_types=("full", "boundary"))
    with pytest.raises(ValueError, match="sampling_steps"):
        _tiny(timesteps=10, sampling_steps=11)
    with pytest.raises(ValueError, match="kernel sizes must be odd"):
        _tiny(decoder_kernel=4)
    with pytest.raises(ValueError, match="postprocess"):
        _tiny(postprocess="mode")


# --------------------------------------------------------------------------------------------- the loss


def _quiet(**kw) -> DiffAct:
    """No dropout: the training forward is deterministic."""
    return _tiny(encoder_dropout=0.0, channel_dropout=0.0, temporal_dropout=0.0, decoder_dropout=0.0, **kw)


def test_encoder_terms_are_the_official_per_video_means_and_padding_is_ignored() -> None:
    torch.manual_seed(0)
    model = _quiet().train()
    weights = torch.rand(K) + 0.5
    loss_fn = DiffActLoss(model, K, class_weights=weights, decoder_ce=0.0, decoder_smooth=0.0, decoder_boundary=0.0)
    xa, xb = torch.randn(1, D, 14), torch.randn(1, D, 20)
    la, lb = torch.randint(0, K, (1, 14)), torch.randint(0, K, (1, 20))

    def alone(x, labels):
        logits, _ = model(x, ())
        loss, parts = loss_fn(logits, labels, torch.ones_like(labels, dtype=torch.float32))
        enc = logits[0]
        ce = nn.CrossEntropyLoss(weight=weights, reduction="none")(enc.transpose(2, 1).reshape(-1, K), labels.view(-1))
        mse = torch.clamp(nn.MSELoss(reduction="none")(F.log_softmax(enc[:, :, 1:], 1),
                                                       F.log_softmax(enc.detach()[:, :, :-1], 1)), 0, 16)
        assert parts["encoder_ce"].item() == pytest.approx(0.5 * ce.mean().item(), rel=1e-5)
        assert parts["encoder_smooth"].item() == pytest.approx(0.1 * mse.mean().item(), rel=1e-5)
        return loss

    expected = (alone(xa, la) + alone(xb, lb)) / 2
    x = torch.cat([torch.cat([xa, torch.randn(1, D, 6) * 9], -1), xb])
    labels = torch.cat([torch.cat([la, torch.full((1, 6), -100)], -1), lb])
    mask = (labels >= 0).float()
    logits, _ = model(x, (), mask[:, None])
    loss, parts = loss_fn(logits, labels, mask)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert int(parts["frames"]) == 34


def test_decoder_terms_follow_the_official_formulas(monkeypatch) -> None:
    torch.manual_seed(0)
    model = _quiet().train()
    labels = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2]])
    dec = torch.randn(1, K, 12, requires_grad=True)
    monkeypatch.setattr(model, "training_decoder_logits", lambda labels, boundary, mask: dec)
    logits, _ = model(torch.randn(1, D, 12), ())
    loss_fn = DiffActLoss(model, K, soft_label=1.4, boundary_smooth=1.0)
    loss, parts = loss_fn(logits, labels, torch.ones(1, 12))
    soft = soft_targets(labels[0], K, 1.4)[None]
    ce = (-soft * F.log_softmax(dec, 1)).sum(0).sum(0).mean()
    change = 1 - torch.einsum("bicl,bcjl->bijl", F.softmax(dec[:, None, :, 1:], 2),
                              F.softmax(dec[:, :, None, :-1].detach(), 1)).squeeze(1)
    bnd = boundary_targets(labels[0], 1.0)[None, None]
    bce = nn.BCELoss(reduction="none")(change, bnd[:, :, 1:]).mean()
    assert parts["decoder_ce"].item() == pytest.approx(0.5 * ce.item(), rel=1e-5)
    assert parts["decoder_boundary"].item() == pytest.approx(0.1 * bce.item(), rel=1e-5)
    total = sum(v for k, v in parts.items() if k != "frames")
    assert loss.item() == pytest.approx(total.item(), rel=1e-6)
    loss.backward()
    assert dec.grad.abs().sum() > 0


def test_training_loss_decreases_on_a_toy_problem() -> None:
    torch.manual_seed(0)
    labels = torch.tensor([[0] * 10 + [1] * 12 + [2] * 8 + [3] * 10] * 2)
    x = F.one_hot(labels, D).permute(0, 2, 1).float() + 0.1 * torch.randn(2, D, 40)
    model = _tiny(timesteps=100).train()
    loss_fn = DiffActLoss(model, K, soft_label=1.4, boundary_smooth=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    # 50 steps: after 30 the sampled decoder output was right on 0.0-0.7 of the frames depending on the seed
    for _ in range(50):
        logits, _ = model(x, ())
        loss, _ = loss_fn(logits, labels, torch.ones(2, 40))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    with torch.no_grad():
        pred = model.eval()(x, ())[0][-1].argmax(1)
    assert (pred == labels).float().mean() > 0.7  # the sampled decoder output, not only the encoder


def test_condition_masks() -> None:
    labels = torch.tensor([[0] * 6 + [1] * 8 + [2] * 6 + [0] * 5])
    boundary = boundary_targets(labels[0], 1.0)[None]
    valid = torch.ones(1, 1, 25)
    assert _tiny(cond_types=("zero",)).condition_mask(labels, boundary, valid).sum() == 0
    assert _tiny(cond_types=("full",)).condition_mask(labels, boundary, valid).sum() == 25
    near = _tiny(cond_types=("boundary03-",)).condition_mask(labels, boundary, valid)
    assert torch.equal(near[0, 0], (boundary[0] < 0.3).float()) and 0 < near.sum() < 25
    assert near[0, 0, 5:7].sum() == 0 and near[0, 0, 2] == 1  # hidden around the change at frame 6
    torch.manual_seed(0)
    for _ in range(5):
        hidden = 1 - _tiny(cond_types=("segment=1",)).condition_mask(labels, boundary, valid)[0, 0]
        assert hidden.sum() > 0 and len(torch.unique(labels[0][hidden > 0])) == 1
        assert torch.equal(hidden > 0, labels[0] == labels[0][hidden > 0][0])  # all frames of that action


# ------------------------------------------------------------------------------- targets, post-processing


def _official_boundary_seq(labels: np.ndarray, smooth: float) -> np.ndarray:  # dataset.py get_boundary_seq
    from scipy.ndimage import gaussian_filter1d as g

    seq = np.zeros(len(labels))
    bounds = [i for i in range(1, len(labels)) if labels[i] != labels[i - 1]]
    seq[bounds] = 1
    seq[[i - 1 for i in bounds]] = 1
    seq = g(seq, smooth)
    temp = np.zeros_like(seq)
    temp[len(temp) // 2] = 1
    temp[len(temp) // 2 - 1] = 1
    z = g(temp, smooth).max()
    seq[seq > z] = z
    return seq / seq.max()


def test_targets_and_filters_match_scipy() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((3, 29)))
    for sigma in (0.7, 1.4, 4.0, 20.0):  # 20: the kernel is wider than the sequence (repeated reflection)
        ref = torch.from_numpy(ndimage.gaussian_filter1d(x.numpy(), sigma))
        torch.testing.assert_close(gaussian_filter1d(x, sigma), ref)
    for size in (1, 2, 3, 15, 30, 40):
        ref = np.stack([ndimage.median_filter(r, size=size, mode="reflect") for r in x.numpy()])
        torch.testing.assert_close(median_filter(x, size), torch.from_numpy(ref))
    labels = torch.from_numpy(np.repeat([3, 1, 3, 0, 2], [7, 2, 9, 1, 10]))
    for smooth in (1.0, 3.0, 20.0):
        torch.testing.assert_close(boundary_targets(labels, smooth).double(),
                                   torch.from_numpy(_official_boundary_seq(labels.numpy(), smooth)), atol=1e-6, rtol=0)
    hard = boundary_targets(labels, None)
    assert hard.tolist()[5:10] == [0, 1, 1, 1, 1] and hard.max() == 1
    assert boundary_targets(torch.zeros(6, dtype=torch.long), 1.0).sum() == 0  # one segment: no boundary
    soft = soft_targets(labels, 4, 1.4)
    onehot = F.one_hot(labels, 4).T.double().numpy()
    torch.testing.assert_close(soft.double(), torch.from_numpy(ndimage.gaussian_filter1d(onehot, 1.4, axis=1)),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(soft.sum(0), torch.ones(29))


def test_purge_splits_short_segments_between_their_neighbours() -> None:
    labels = torch.tensor([5] + [0] * 4 + [1] * 2 + [2] * 4 + [3])
    # first segment (1 frame) -> next label; [1, 1] -> half to 0, half to 2; last (1 frame) -> previous
    assert purge(labels, 2).tolist() == [0] * 6 + [2] * 6
    assert torch.equal(purge(labels, 0), labels)
    assert purge(torch.tensor([4, 4]), 5).tolist() == [4, 4]


def test_official_purge_end_counts_the_last_segment_one_frame_short() -> None:
    """0 0 0 0 1 1 1 1, purge segments <= 3: the last segment (frames 4-7) has 4 frames and stays; the
    official ends it at index 7 (3 frames, 4..6), so it is purged: frames 4..6 take the previous label 0
    and frame 7 keeps its 1."""
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    assert torch.equal(purge(labels, 3), labels)
    assert purge(labels, 3, official_end=True).tolist() == [0, 0, 0, 0, 0, 0, 0, 1]


def test_postprocessed_last_stage() -> None:
    torch.manual_seed(0)
    model = _tiny(postprocess="purge", postprocess_size=2).eval()
    x = torch.randn(1, D, 30)
    with torch.no_grad():
        out, _ = model(x, ())
        model.postprocess = "none"
        raw, _ = model(x, ())
        model.postprocess, model.postprocess_size = "median", 5
        med, _ = model(x, ())
    assert torch.equal(out[-1].argmax(1)[0], purge(raw[-1].argmax(1)[0], 2))
    probs = median_filter(F.softmax(raw[-1][0].double(), 0), 5)
    assert torch.equal(med[-1].argmax(1)[0], probs.argmax(0))
    torch.testing.assert_close(med[-1][0].exp().sum(0), torch.ones(30), atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------------- end to end

TINY_DIFFACT = [
    "-o", "train.epochs=2",
    "-o", "train.log_every=1",
    "-o", "model.encoder_layers=3",
    "-o", "model.encoder_maps=8",
    "-o", "model.feature_layers=0,2",
    "-o", "model.decoder_layers=2",
    "-o", "model.decoder_maps=8",
    "-o", "model.time_emb_dim=16",
    "-o", "model.sampling_steps=2",
    "-o", "data.num_videos=8",
    "-o", "data.with_videos=false",
]


def test_recipe_class_weights_are_the_official_ones(synth_root: Path) -> None:
    from streamseg.engine.recipes import training_class_weights
    from streamseg.engine.recipes.diffact import diffact_module

    configs = load_configs("synth", "diffact", "quick", None)
    params, _ = resolve_params(configs, [f"data.root={synth_root}"])
    classes = [line.split()[1] for line in (synth_root / "mapping.txt").read_text().splitlines()]
    counts = np.zeros(len(classes))
    for name in (synth_root / "splits" / "train.split1.bundle").read_text().split():
        for label in (synth_root / "groundTruth" / name).read_text().split():
            counts[classes.index(label)] += 1
    expected = counts.sum() / ((counts + 10) * len(classes))  # dataset.py get_class_weights
    torch.testing.assert_close(training_class_weights(params, len(classes)), torch.from_numpy(expected).float())
    with pytest.raises(TypeError, match="trains DiffAct"):
        diffact_module(nn.Linear(2, 2), params, None)


def test_train_and_test_through_the_runner(tmp_path: Path, synth_root: Path) -> None:
    out = streamseg("train", "-D", "synth", "-M", "diffact", "-E", "quick", "-R", str(tmp_path),
                    "-o", f"data.root={synth_root}", *TINY_DIFFACT)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "synth" / "diffact_quick" / "version_0"
    assert (run / "DONE").is_file() and (run / "checkpoints" / "best.ckpt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["acc"] <= 100.0 and metrics["num_videos"] > 0
    logged = (run / "logs" / "csv" / "metrics.csv").read_text().splitlines()[0]
    for part in ("train/encoder_ce", "train/decoder_ce", "train/decoder_boundary"):
        assert part in logged
