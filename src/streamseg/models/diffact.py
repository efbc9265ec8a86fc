"""DiffAct (Liu, Wang, Yuan & Zhou, ICCV 2023): temporal action segmentation by iterative denoising.

The official model (Finspire13/DiffAct ``model.py``, ``ASDiffusionModel``), with the official parameter
names, so its ``epoch-N.model`` / ``latest.pt`` files load strictly (``model.weights``):

* **encoder** (``EncoderModel``): channel dropout and frame dropout on the input, a 1x1 conv to
  ``encoder_maps``, ``encoder_layers`` mixed layers with dilation 2^i, a 1x1 conv to K class logits. The
  outputs of the layers in ``feature_layers`` (0-based; -1 = the input features, -2 = the encoder's softmax)
  are concatenated into the conditioning features F (GTEA: layers 5, 7, 9 -> 3 x 64 = 192 channels).
* **mixed layer** (``MixedConvAttentionLayer[V2]``): dropout, then a dilated conv (kernel k, dilation d)
  plus a local attention over the same k taps (t - d*(k//2), ..., t + d*(k//2)), instance norm, a 1x1 conv
  -> ReLU -> 1x1 conv FFN, a residual connection. Decoder layers take queries and keys from [x; F] (cross
  attention to the encoder features), values from x.
* **decoder** (``DecoderModel``): a sinusoidal embedding of the diffusion step t through Linear -> swish ->
  Linear, the noisy action sequence (K, T) in [0, 1] through a 1x1 conv to ``decoder_maps`` plus
  Linear(swish(embedding)), ``decoder_layers`` mixed cross layers, a 1x1 conv to K logits: the prediction
  of the clean sequence x0.
* **diffusion**: cosine schedule over ``timesteps`` (1000); sequences are one-hot labels scaled to
  [-snr_scale, snr_scale]; training noises the ground truth at a random t per video and conditions the
  decoder on F masked by a random ``cond_types`` entry per video ('full', 'zero', 'boundary0X-': frames whose
  smoothed boundary target is >= 0.X hidden, 'segment=n': n random actions of the video hidden);
  inference runs DDIM (``sampling_steps`` = 25, eta 1) from Gaussian noise with the unmasked F.

Outputs. ``forward(x (B, D, T), state=(), mask (B, 1, T) | None) -> (logits, ())``:

* training mode: the encoder logits, (1, B, K, T). The conditioning features of the same call are kept in
  ``model.features`` for ``DiffActLoss`` (:mod:`streamseg.models.diffact_loss`), which noises the labels
  and runs the decoder itself (the forward pass has no labels).
* eval mode: (2, B, K, T) = [encoder logits, decoder logits of the last DDIM step] (softmax of the latter
  is the official ``ddim_sample`` output). With ``postprocess`` the last stage is replaced by the
  post-processed prediction: ``"median"``, log of the per-class median-filtered probabilities (window
  ``postprocess_size``, scipy's reflect mode; renormalised over classes); ``"purge"``, the one-hot of the
  prediction with segments of at most ``postprocess_size`` frames split between their neighbours.
  Inside ``raw_outputs()`` (`PostProcesses`) it is not, and the context yields the post-processing: the
  engine's mean over the sample-rate offsets (``data.test_offsets``, the official 50Salads test) filters
  the mean once, as the official does.

Sampling is deterministic given ``sampling_seed``: every video draws its noise from its own
``torch.Generator`` (on the features' device) seeded with ``sampling_seed``, plus the video's index in its
split when ``seed_by_video_index`` (the engine hands the indices over through `set_video_indices`), so a
video's output depends neither on its place in the batch nor on padding. ``sampling_seed=None`` draws from
the global RNG. The draws follow the official ``ddim_sample`` (Finspire13/DiffAct ``model.py``) exactly:
``randn(K, n)`` in float32 for the start, float32 again for the first step's noise (``randn_like`` of the
float32 start), float64 for every later step's noise (``randn_like`` of the state, float64 from the first
update on); the update mixes float32 and float64 as the official type promotion does. So with
``sampling_seed = 0`` and ``seed_by_video_index`` (the official ``set_sampling_seed``: seed = the video's
index in the test list), a video's noise is the official noise: the official re-seeds torch's global
generators with that seed before its first draw, and its draws for one unpadded video have the same shapes,
dtypes and order as ours (on CUDA, a CUDA generator seeded so draws what the seeded default CUDA generator
draws). The official's later re-seeding from the wall clock touches no stream used here.

Parameter count, 2048-d input, GTEA config (encoder 10 x 64, kernel 5, features 5/7/9; decoder 8 x 24,
kernel 5, time embedding 512), K classes (instance norms have no parameters)::

    encoder layer (64): conv 64*64*5 + 64 = 20,544; q, k, v 3 * 4,160 = 12,480; FFN 2 * 4,160 = 8,320
                        -> 41,344; x 10 = 413,440
    encoder: conv_in 2048*64 + 64 = 131,136; layers 413,440; conv_out 64K + K -> 544,576 + 65K
    decoder layer (24, cross 192): conv 24*24*5 + 24 = 2,904; q, k 2 * (216*24 + 24) = 10,416;
                        v 600; FFN 1,200 -> 15,120; x 8 = 120,960
    decoder: time_in 2 * (512*512 + 512) = 525,312; time_proj 512*24 + 24 = 12,312; layers 120,960;
             conv_in 24K + 24; conv_out 24K + K -> 658,608 + 49K
    total: 1,203,184 + 114K = 1,204,438 (K = 11; 545,291 of it the encoder); 1,205,350 (K = 19);
           1,208,656 (K = 48)

With each dataset's own config: 50Salads (decoder kernel 7: +1,152 per decoder layer) 1,214,566 at K = 19;
Breakfast (encoder 12 x 256, features 7/8/9, decoder 8 x 128) 11,912,800 at K = 48 (encoder 8,419,632).

Differences from the official code (the parameters are the same, and so are the raw outputs of one
unpadded video given the same noise):

* Padded batches. Every layer's output is multiplied by the mask, instance norms use the valid frames'
  statistics, attention keys at masked frames are treated as the official code treats keys beyond the
  video's ends; so a padded video gives the logits it gets alone. Losses are per-video means averaged over
  the batch (the paper configs train one video per step and accumulate 4 steps across epochs as the
  official loop does: ``train.accumulate_across_epochs``).
* Randomness: training draws t, noise and condition types from torch's global RNG (the official mixes
  python's ``random``, numpy and torch); sampling uses per-video generators (above), not re-seeding the
  global RNG with the video's index and then with the wall clock.
* Boundary targets (loss, 'boundary0X-' conditions) are computed from the labels at the model's sample
  rate with sigma ``boundary_smooth / sample_rate`` (the recipe divides), not at the original rate and then
  subsampled; no temporal augmentation over sample-rate offsets, and no test-time mean over the offsets
  (the engine repeats predictions back to the original rate). Identical at sample rate 1 (GTEA, Breakfast).
* ``purge`` ends the last segment at T unless ``official_purge_end`` (the official
  ``get_labels_start_end_time`` ends it one frame early, so a purged last segment keeps its last frame).
* The schedule buffers (float64, as official; persistent, so official files load) are kept; the DDIM update
  runs in float64 as the official type promotion does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .hooks import PostProcesses, SeedsPerVideo
from .mstcn import check_input

__all__ = ["DiffAct", "COND_TYPES", "median_filter", "purge", "reflect_index"]

COND_TYPES = ("full", "zero", "boundary05-", "boundary03-", "segment=1", "segment=2")
"""Training conditions of the official code: all features, none, features away from boundaries (target
below 0.5 / 0.3), features of all but 1 / 2 random actions of the video (the 2 may coincide)."""


# --------------------------------------------------------------------------------------------- helpers


def timestep_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding (B,) -> (B, dim): [sin(t w_i), cos(t w_i)], w_i = 10000^(-i / (dim/2 - 1))."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(10000) / (half - 1)))
    arg = t.float()[:, None] * freq[None, :]
    emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


def cosine_beta_schedule(timesteps: int, s: float = 0.008) -> Tensor:
    """Nichol & Dhariwal's cosine schedule: betas (timesteps,) float64, clipped to [0, 0.999]."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    alpha_bar = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    alpha_bar = alpha_bar / alpha_bar[0]
    return torch.clip(1 - alpha_bar[1:] / alpha_bar[:-1], 0, 0.999)


def masked_instance_norm(x: Tensor, mask: Tensor, eps: float = 1e-5) -> Tensor:
    """``nn.InstanceNorm1d`` (no affine, biased variance) over the valid frames of each video; 0 elsewhere."""
    n = mask.sum(dim=-1, keepdim=True).clamp(min=1)
    mean = (x * mask).sum(dim=-1, keepdim=True) / n
    centred = (x - mean) * mask
    var = centred.square().sum(dim=-1, keepdim=True) / n
    return centred / torch.sqrt(var + eps)


def reflect_index(index: Tensor, n: int) -> Tensor:
    """scipy.ndimage's 'reflect' boundary (d c b a | a b c d | d c b a), for any integer index."""
    m = torch.remainder(index, 2 * n)
    return torch.where(m >= n, 2 * n - 1 - m, m)


def _windows(x: Tensor, pad: int, dilation: int) -> Tensor:
    """(B, C, T) -> (B, C, T, k): x at t - pad, t - pad + dilation, ..., t + pad, zeros beyond the ends."""
    return F.pad(x, (pad, pad)).unfold(2, 2 * pad + 1, 1)[..., ::dilation]


# ---------------------------------------------------------------------------------------------- layers


class MixedConvAttentionLayer(nn.Module):
    """Dilated conv + local (cross) attention over the same taps, instance norm, FFN, residual.

    ``forward(x (B, C, T), mask (B, 1, T), cross (B, C_cross, T) | None) -> (B, C, T)``, zero at masked
    frames. Attention: q, k = 1x1 convs of [x; cross] (x alone without cross), v = 1x1 conv of x; scores
    q.k / sqrt(C) over the k taps; taps beyond the video (or masked) get log(1e-6) added before the softmax
    and weight 0 after it (the official masking).
    """

    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float, cross_channels: int = 0):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"DiffAct: kernel sizes must be odd, got {kernel_size}")
        self.channels = channels
        self.dilation = dilation
        self.pad = (kernel_size // 2) * dilation
        self.conv_block = nn.Sequential(
            nn.Conv1d(channels, channels, kernel_size, padding=self.pad, dilation=dilation)
        )
        self.att_linear_q = nn.Conv1d(channels + cross_channels, channels, 1)
        self.att_linear_k = nn.Conv1d(channels + cross_channels, channels, 1)
        self.att_linear_v = nn.Conv1d(channels, channels, 1)
        self.ffn_block = nn.Sequential(nn.Conv1d(channels, channels, 1), nn.ReLU(), nn.Conv1d(channels, channels, 1))
        self.dropout = nn.Dropout(dropout)

    def attention(self, x: Tensor, mask: Tensor, cross: Tensor | None) -> Tensor:
        qk_in = x if cross is None else torch.cat([x, cross], dim=1)
        q = self.att_linear_q(qk_in)
        keys = _windows(self.att_linear_k(qk_in) * mask, self.pad, self.dilation)  # (B, C, T, k)
        values = _windows(self.att_linear_v(x) * mask, self.pad, self.dilation)
        valid = _windows(mask, self.pad, self.dilation)[:, 0]  # (B, T, k)
        scores = torch.einsum("bct,bctk->btk", q, keys) / math.sqrt(self.channels)
        weights = F.softmax(scores + torch.log(valid + 1e-6), dim=-1) * valid
        return torch.einsum("btk,bctk->bct", weights, values)

    def forward(self, x: Tensor, mask: Tensor, cross: Tensor | None = None) -> Tensor:
        x_drop = self.dropout(x)
        cross_drop = None if cross is None else self.dropout(cross)
        out = self.conv_block(x_drop) + self.attention(x_drop, mask, cross_drop)
        out = self.ffn_block(masked_instance_norm(out, mask))
        return (x + out) * mask


class MixedConvAttModule(nn.Module):
    """``num_layers`` mixed layers with dilation 2^i; optionally adds a projected time embedding first.

    ``forward(x, mask, cross=None, time_emb=None, keep=()) -> (x, [outputs of the layers in keep])``.
    """

    def __init__(self, num_layers: int, channels: int, kernel_size: int, dropout: float,
                 cross_channels: int = 0, time_emb_dim: int | None = None):
        super().__init__()
        if time_emb_dim is not None:
            self.time_proj = nn.Linear(time_emb_dim, channels)
        self.layers = nn.ModuleList(
            MixedConvAttentionLayer(channels, kernel_size, 2**i, dropout, cross_channels) for i in range(num_layers)
        )

    def forward(self, x: Tensor, mask: Tensor, cross: Tensor | None = None, time_emb: Tensor | None = None,
                keep: Sequence[int] = ()) -> tuple[Tensor, list[Tensor]]:
        if time_emb is not None:
            x = (x + self.time_proj(F.silu(time_emb))[:, :, None]) * mask
        kept = []
        for i, layer in enumerate(self.layers):
            x = layer(x, mask, cross)
            if i in keep:
                kept.append(x)
        return x, kept


class DiffActEncoder(nn.Module):
    """Official ``EncoderModel``. ``forward(x (B, D, T), mask) -> (logits (B, K, T), features (B, F, T))``."""

    def __init__(self, in_channels: int, num_classes: int, num_layers: int, num_maps: int, kernel_size: int,
                 dropout: float, channel_dropout: float, temporal_dropout: float, feature_layers: Sequence[int]):
        super().__init__()
        self.feature_layers = tuple(feature_layers)
        self.dropout_channel = nn.Dropout2d(channel_dropout)
        self.dropout_temporal = nn.Dropout2d(temporal_dropout)
        self.conv_in = nn.Conv1d(in_channels, num_maps, 1)
        self.encoder = MixedConvAttModule(num_layers, num_maps, kernel_size, dropout)
        self.conv_out = nn.Conv1d(num_maps, num_classes, 1)

    def forward(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        features = [x] if -1 in self.feature_layers else []
        h = self.dropout_channel(x.unsqueeze(3)).squeeze(3)  # whole channels
        h = self.dropout_temporal(h.unsqueeze(3).transpose(1, 2)).squeeze(3).transpose(1, 2)  # whole frames
        h, kept = self.encoder(self.conv_in(h) * mask, mask, keep=self.feature_layers)
        logits = self.conv_out(h) * mask
        features += kept
        if -2 in self.feature_layers:
            features.append(F.softmax(logits, dim=1) * mask)
        return logits, torch.cat(features, dim=1)


class DiffActDecoder(nn.Module):
    """Official ``DecoderModel``: ``forward(features (B, F, T), t (B,), event (B, K, T) in [0, 1], mask)
    -> logits (B, K, T)`` of the clean sequence."""

    def __init__(self, feature_channels: int, num_classes: int, num_layers: int, num_maps: int, time_emb_dim: int,
                 kernel_size: int, dropout: float):
        super().__init__()
        self.time_emb_dim = time_emb_dim
        self.time_in = nn.ModuleList([nn.Linear(time_emb_dim, time_emb_dim), nn.Linear(time_emb_dim, time_emb_dim)])
        self.conv_in = nn.Conv1d(num_classes, num_maps, 1)
        self.module = MixedConvAttModule(num_layers, num_maps, kernel_size, dropout, feature_channels, time_emb_dim)
        self.conv_out = nn.Conv1d(num_maps, num_classes, 1)

    def forward(self, features: Tensor, t: Tensor, event: Tensor, mask: Tensor) -> Tensor:
        emb = self.time_in[1](F.silu(self.time_in[0](timestep_embedding(t, self.time_emb_dim))))
        h, _ = self.module(self.conv_in(event) * mask, mask, cross=features, time_emb=emb)
        return self.conv_out(h) * mask


# ----------------------------------------------------------------------------------------------- model

_BOUNDARY_COND = re.compile(r"^boundary0(\d)-$")
_SEGMENT_COND = re.compile(r"^segment=(\d+)$")


class DiffAct(nn.Module, SeedsPerVideo, PostProcesses):
    """DiffAct over a whole video (see the module docstring). Defaults: the official GTEA config.

    Args:
        in_channels: D. num_classes: K.
        encoder_layers, encoder_maps, encoder_kernel, encoder_dropout: encoder depth, width, kernel,
            dropout inside its layers (official ``normal_dropout_rate``).
        channel_dropout, temporal_dropout: input dropout of whole channels / whole frames.
        feature_layers: encoder layers (0-based) whose outputs condition the decoder; -1 = the input,
            -2 = the encoder's class probabilities.
        input_instance_norm: instance-normalise the input features (official ``use_instance_norm``).
        decoder_layers, decoder_maps, decoder_kernel, decoder_dropout, time_emb_dim: the decoder.
        timesteps: diffusion steps of the schedule. sampling_steps: DDIM steps at inference. ddim_eta: DDIM
            noise (1 = DDPM-like, 0 = deterministic given the initial noise). snr_scale: one-hot sequences are
            mapped to [-snr_scale, snr_scale].
        cond_types: training conditions, one drawn uniformly per video (repeats weight it); see COND_TYPES.
        detach_decoder: no decoder gradient into the encoder.
        sampling_seed: seed of each video's sampling noise (None: the global RNG).
        seed_by_video_index: add the video's index in its split to ``sampling_seed`` (the official test loop).
        postprocess, postprocess_size: "none", "median" (window) or "purge" (longest purged segment).
        official_purge_end: purge ends the last segment one frame early, as the official (see `purge`).
    """

    lookahead: int | None = None  # every output frame sees the whole video

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        encoder_layers: int = 10,
        encoder_maps: int = 64,
        encoder_kernel: int = 5,
        encoder_dropout: float = 0.5,
        channel_dropout: float = 0.5,
        temporal_dropout: float = 0.5,
        feature_layers: Sequence[int] = (5, 7, 9),
        input_instance_norm: bool = False,
        decoder_layers: int = 8,
        decoder_maps: int = 24,
        decoder_kernel: int = 5,
        decoder_dropout: float = 0.1,
        time_emb_dim: int = 512,
        timesteps: int = 1000,
        sampling_steps: int = 25,
        ddim_eta: float = 1.0,
        snr_scale: float = 0.5,
        cond_types: Sequence[str] = ("full", "zero", "boundary03-", "segment=1", "segment=1"),
        detach_decoder: bool = False,
        sampling_seed: int | None = 0,
        seed_by_video_index: bool = False,
        postprocess: str = "none",
        postprocess_size: int = 3,
        official_purge_end: bool = False,
    ) -> None:
        super().__init__()
        feature_layers = tuple(int(i) for i in feature_layers)
        bad = [i for i in feature_layers if not -2 <= i < encoder_layers]
        if not feature_layers or bad:
            raise ValueError(f"DiffAct: feature_layers must be a non-empty list of encoder layers in "
                             f"[0, {encoder_layers}) or -1 (input) / -2 (encoder softmax), got {list(feature_layers)}")
        if not 1 <= sampling_steps <= timesteps:
            raise ValueError(f"DiffAct: sampling_steps must be in [1, timesteps={timesteps}], got {sampling_steps}")
        if time_emb_dim < 4:
            raise ValueError(f"DiffAct: time_emb_dim must be >= 4, got {time_emb_dim}")
        unknown = [c for c in cond_types
                   if not (c in ("full", "zero") or _BOUNDARY_COND.match(c) or _SEGMENT_COND.match(c))]
        if not cond_types or unknown:
            raise ValueError(f"DiffAct: cond_types must be a non-empty list of {list(COND_TYPES)} "
                             f"(boundary0X- and segment=N in general), got {list(cond_types)}")
        if postprocess not in ("none", "median", "purge") or postprocess_size < 1:
            raise ValueError(f"DiffAct: postprocess must be 'none', 'median' or 'purge' with postprocess_size >= 1, "
                             f"got {postprocess!r}, {postprocess_size}")
        self.in_channels, self.num_classes = in_channels, num_classes
        self.input_instance_norm = input_instance_norm
        self.num_timesteps, self.sampling_steps = timesteps, sampling_steps
        self.ddim_eta, self.scale = ddim_eta, snr_scale
        self.cond_types, self.detach_decoder = tuple(cond_types), detach_decoder
        self.sampling_seed, self.seed_by_video_index = sampling_seed, seed_by_video_index
        self.video_indices: list[int] | None = None  # of the next eval call's videos (set_video_indices)
        self.postprocess, self.postprocess_size = postprocess, postprocess_size
        self.official_purge_end = official_purge_end

        layer_features = sum(1 for i in feature_layers if i >= 0) * encoder_maps
        feature_channels = layer_features + in_channels * (-1 in feature_layers) + num_classes * (-2 in feature_layers)
        self.encoder = DiffActEncoder(in_channels, num_classes, encoder_layers, encoder_maps, encoder_kernel,
                                      encoder_dropout, channel_dropout, temporal_dropout, feature_layers)
        self.decoder = DiffActDecoder(feature_channels, num_classes, decoder_layers, decoder_maps, time_emb_dim,
                                      decoder_kernel, decoder_dropout)

        # The official buffers (float64; the posterior ones are unused by DDIM, kept so official files load).
        betas = cosine_beta_schedule(timesteps)
        alpha_bar = torch.cumprod(1.0 - betas, dim=0)
        alpha_bar_prev = F.pad(alpha_bar[:-1], (1, 0), value=1.0)
        posterior_variance = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        for name, value in {
            "betas": betas,
            "alphas_cumprod": alpha_bar,
            "alphas_cumprod_prev": alpha_bar_prev,
            "sqrt_alphas_cumprod": alpha_bar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alpha_bar).sqrt(),
            "log_one_minus_alphas_cumprod": torch.log(1.0 - alpha_bar),
            "sqrt_recip_alphas_cumprod": torch.sqrt(1.0 / alpha_bar),
            "sqrt_recipm1_alphas_cumprod": torch.sqrt(1.0 / alpha_bar - 1),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": torch.log(posterior_variance.clamp(min=1e-20)),
            "posterior_mean_coef1": betas * alpha_bar_prev.sqrt() / (1.0 - alpha_bar),
            "posterior_mean_coef2": (1.0 - alpha_bar_prev) * (1.0 - betas).sqrt() / (1.0 - alpha_bar),
        }.items():
            self.register_buffer(name, value)
        self.features: Tensor | None = None  # conditioning features of the last training forward
        self.mask: Tensor | None = None

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """Stateless: the empty tuple."""
        return ()

    # -------------------------------------------------------------------------------- building blocks
    def encode(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(x (B, D, T), mask (B, 1, T)) -> (encoder logits (B, K, T), conditioning features (B, F, T))."""
        x = x * mask
        if self.input_instance_norm:
            x = masked_instance_norm(x, mask)
        return self.encoder(x, mask)

    def denoise(self, features: Tensor, t: Tensor, event: Tensor, mask: Tensor) -> Tensor:
        """Decoder logits of x0 from the noisy sequence ``event`` (B, K, T) in [0, 1] at steps ``t`` (B,)."""
        return self.decoder(features, t, event.to(features.dtype), mask)

    def diffuse(self, labels_onehot: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """q(x_t | x0): one-hot (B, K, T) -> the noisy sequence clamped and mapped back to [0, 1]."""
        x0 = (labels_onehot * 2.0 - 1.0) * self.scale
        a = self.sqrt_alphas_cumprod[t].view(-1, 1, 1)
        s = self.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1)
        x = (a * x0 + s * noise).clamp(-self.scale, self.scale)
        return (x / self.scale + 1.0) / 2.0

    def condition_mask(self, labels: Tensor, boundary: Tensor, mask: Tensor) -> Tensor:
        """(B, 1, T) mask of the conditioning features, one random ``cond_types`` entry per video."""
        out = mask.new_ones(labels.shape[0], 1, labels.shape[1])
        for b in range(labels.shape[0]):
            cond = self.cond_types[int(torch.randint(len(self.cond_types), ()))]
            if cond == "zero":
                out[b] = 0.0
            elif m := _BOUNDARY_COND.match(cond):
                out[b, 0] = (boundary[b] < int(m.group(1)) / 10).to(out.dtype)
            elif m := _SEGMENT_COND.match(cond):
                events = torch.unique(labels[b][mask[b, 0] > 0])
                if events.numel():
                    for _ in range(int(m.group(1))):
                        event = events[int(torch.randint(events.numel(), ()))]
                        out[b, 0] *= (labels[b] != event).to(out.dtype)
        return out

    def training_decoder_logits(self, labels: Tensor, boundary: Tensor, mask: Tensor) -> Tensor:
        """The decoder's training pass on the features of the last training forward: noise the labels
        (B, T) at a random step per video, hide features per a random condition, predict x0 -> (B, K, T)."""
        features, fmask = self.features, self.mask
        if features is None or fmask is None or features.shape[0] != labels.shape[0] \
                or features.shape[-1] != labels.shape[-1]:
            raise RuntimeError(
                "DiffAct: no conditioning features of this batch (got "
                f"{None if features is None else tuple(features.shape)} for labels {tuple(labels.shape)}); "
                "run the model's forward in training mode right before the loss"
            )
        if self.detach_decoder:
            features = features.detach()
        valid = mask.view_as(fmask).to(features.dtype)
        onehot = F.one_hot(labels.clamp(min=0), self.num_classes).permute(0, 2, 1).double() * valid.double()
        t = torch.randint(0, self.num_timesteps, (labels.shape[0],), device=labels.device)
        event = self.diffuse(onehot, t, torch.randn_like(onehot, dtype=torch.float32).double()) * valid
        cond = self.condition_mask(labels, boundary, valid)
        return self.denoise(features * cond, t, event, valid)

    # ----------------------------------------------------------------------------------------- DDIM
    def set_video_indices(self, indices: Sequence[int] | None) -> None:
        """The indices in their split of the videos of the next eval call (engine; `seed_by_video_index`)."""
        self.video_indices = None if indices is None else [int(i) for i in indices]

    @torch.no_grad()
    def sample(self, features: Tensor, mask: Tensor, seed: int | Sequence[int] | None = None,
               steps: int | None = None) -> Tensor:
        """DDIM from Gaussian noise conditioned on ``features`` (B, F, T); returns the decoder logits (B, K, T)
        of the last step. ``seed``: one for every video, one per video, or None (global RNG). ``steps``
        (default ``sampling_steps``) evenly spaced steps from timesteps - 1 down."""
        steps = self.sampling_steps if steps is None else steps
        if not 1 <= steps <= self.num_timesteps:
            raise ValueError(f"DiffAct.sample: steps must be in [1, {self.num_timesteps}], got {steps}")
        batch, _, length = features.shape
        valid = mask[:, 0] > 0
        counts = valid.sum(dim=1).tolist()
        gens = [None] * batch
        if seed is not None:
            seeds = [int(seed)] * batch if isinstance(seed, int) else [int(s) for s in seed]
            if len(seeds) != batch:
                raise ValueError(f"DiffAct.sample: {len(seeds)} seeds for a batch of {batch} videos")
            gens = [torch.Generator(device=features.device).manual_seed(s) for s in seeds]

        def noise(dtype: torch.dtype) -> Tensor:
            z = torch.zeros(batch, self.num_classes, length, dtype=dtype, device=features.device)
            for b in range(batch):  # (K, n) per video: independent of batch position and padding
                z[b][:, valid[b]] = torch.randn(self.num_classes, int(counts[b]), generator=gens[b],
                                                dtype=dtype, device=features.device)
            return z

        dmask = mask.double()
        # official: linspace(-1, T - 1, steps + 1) truncated to int, reversed: 999, 959, ..., 39, -1
        times = torch.linspace(-1, self.num_timesteps - 1, steps=steps + 1).int().tolist()[::-1]
        x = noise(torch.float32)  # the official start: randn of the float32 shape
        logits = features.new_zeros(batch, self.num_classes, length)
        for time, time_next in zip(times[:-1], times[1:]):
            t = torch.full((batch,), time, dtype=torch.long, device=features.device)
            event = (x.clamp(-self.scale, self.scale) / self.scale + 1.0) / 2.0  # x's dtype, as official
            logits = self.denoise(features, t, (event * dmask).float(), mask)
            x0 = ((F.softmax(logits, dim=1) * 2.0 - 1.0) * self.scale).clamp(-self.scale, self.scale)  # float32
            if time_next < 0:
                break
            # The official extracts these coefficients as (B, 1, 1) float64 tensors, which promote x to float64;
            # a_next, sigma and c stay 0-dim and do not promote: x0 * sqrt(a_next) is computed in float32.
            eps = (self.sqrt_recip_alphas_cumprod[time].view(1, 1, 1) * x - x0) / \
                self.sqrt_recipm1_alphas_cumprod[time].view(1, 1, 1)
            a, a_next = self.alphas_cumprod[time], self.alphas_cumprod[time_next]
            sigma = self.ddim_eta * ((1 - a / a_next) * (1 - a_next) / (1 - a)).sqrt()
            c = (1 - a_next - sigma**2).sqrt()
            x = (x0 * a_next.sqrt() + c * eps + sigma * noise(x.dtype)) * dmask  # randn_like(x): float32, then float64
        return logits

    # -------------------------------------------------------------------------------------- forward
    def forward(
        self, x: Tensor, state: tuple[Tensor, ...] = (), mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        mask = check_input(x, mask, self.in_channels, "DiffAct.forward")
        logits, features = self.encode(x, mask)
        if self.training:
            self.features, self.mask = features, mask
            return logits[None], ()
        self.features = self.mask = None
        decoded = self.sample(features, mask, self._seeds(x.shape[0]))
        if self.postprocess != "none":
            decoded = self._postprocess(decoded, mask[:, 0] > 0)
        return torch.stack([logits, decoded.to(logits.dtype)]), ()

    def _seeds(self, batch: int) -> int | list[int] | None:
        if self.sampling_seed is None or not self.seed_by_video_index:
            return self.sampling_seed
        if self.video_indices is None or len(self.video_indices) != batch:
            raise ValueError(f"DiffAct: seed_by_video_index needs the indices of the {batch} videos of this call "
                             f"(set_video_indices; the engine sets them), got {self.video_indices}")
        return [self.sampling_seed + i for i in self.video_indices]

    @contextmanager
    def raw_outputs(self) -> Iterator[Callable[[Tensor, Tensor], Tensor]]:
        """Inside: the eval output's last stage is the decoder's logits, not post-processed (`PostProcesses`;
        the official 50Salads test filters the mean over the sample-rate offsets, not each offset). Yields
        ``postprocess`` as a function of (logits (B, K, T), valid (B, T) bool) (identity for "none")."""
        kept, self.postprocess = self.postprocess, "none"
        try:
            yield lambda logits, valid: logits if kept == "none" else self._postprocess(logits, valid, kept)
        finally:
            self.postprocess = kept

    def _postprocess(self, logits: Tensor, valid: Tensor, mode: str | None = None) -> Tensor:
        mode = self.postprocess if mode is None else mode
        out = torch.zeros_like(logits)
        for b in range(logits.shape[0]):
            idx = torch.nonzero(valid[b]).flatten()
            if idx.numel() == 0:
                continue
            part = logits[b][:, idx]
            if mode == "median":
                probs = median_filter(F.softmax(part.double(), dim=0), self.postprocess_size)
                probs = probs / probs.sum(dim=0, keepdim=True).clamp(min=1e-12)
                out[b][:, idx] = torch.log(probs.clamp(min=1e-12)).to(out.dtype)
            else:
                labels = purge(part.argmax(dim=0), self.postprocess_size, self.official_purge_end)
                out[b][:, idx] = F.one_hot(labels, self.num_classes).T.to(out.dtype)
        return out


def median_filter(x: Tensor, size: int) -> Tensor:
    """``scipy.ndimage.median_filter(row, size, mode='reflect')`` of every row of ``x`` (C, n): the window
    covers offsets -(size // 2) .. size - 1 - size // 2; an even window takes the upper middle value."""
    n = x.shape[-1]
    left = size // 2
    padded = x[..., reflect_index(torch.arange(-left, n + size - 1 - left, device=x.device), n)]
    return padded.unfold(-1, size, 1).sort(dim=-1).values[..., size // 2]


def purge(labels: Tensor, max_length: int, official_end: bool = False) -> Tensor:
    """The official ``purge`` post-processing of one video's labels (n,): every segment of at most
    ``max_length`` frames takes its neighbours' labels (the first half the previous segment's, the rest the
    next one's; first and last segments take their one neighbour's). Neighbours are the original segments.
    ``official_end``: the last segment ends at n - 1, as the official ``get_labels_start_end_time``
    (DiffAct ``utils.py``) ends it: it counts one frame less and, when purged, keeps its last frame."""
    change = torch.nonzero(labels[1:] != labels[:-1]).flatten() + 1
    starts = [0] + change.tolist()
    ends = change.tolist() + [labels.shape[0] - int(official_end)]
    seg = [int(labels[s]) for s in starts]
    out = labels.clone()
    if len(seg) < 2:
        return out
    for e, (s, end) in enumerate(zip(starts, ends)):
        duration = end - s
        if duration > max_length:
            continue
        if e == 0:
            out[s:end] = seg[1]
        elif e == len(seg) - 1:
            out[s:end] = seg[-2]
        else:
            mid = s + duration // 2
            out[s:mid] = seg[e - 1]
            out[mid:end] = seg[e + 1]
    return out
