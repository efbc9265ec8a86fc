"""Transeger (SVTAS, arXiv 2209.13808), made causal: an image branch, a prompt-learning text branch fed
with earlier labels, and a MemoryTCN joint network. Written afresh from the paper and SVTAS's code.

Branches, per chunk ``x`` (B, 3, T, H, W):

* image: a frame encoder (causal TSM-MobileNetV2, :func:`streamseg.models.tsm.tsm_mobilenet_v2`;
  D = 1280) -> dropout -> 1x1 conv to ``image_dim`` (SVTAS: avg pool, dropout 0.5, 1280 -> 64).
* text: :class:`PromptTextEncoder`, a small CLIP-style transformer built here. Each class name is split
  into words (``"take_bowl"`` -> take, bowl); the vocabulary is the sorted words of the dataset's class
  names (no downloads, no BPE). The prompt of class k is ``[SOT] ctx_1 .. ctx_n <words of k> [EOT]``
  with ``n`` learnable context vectors (CoOp; class-specific by default, as SVTAS's), plus one "no
  label" prompt ``[SOT] ctx [EOT]`` (row 0). Token + positional embedding -> pre-LN transformer with a
  causal attention mask -> final LayerNorm -> the [EOT] token's vector (CLIP's pooling; with the causal
  mask it never sees the padding) -> linear to ``text_dim``. Result: a table (K + 1, text_dim), one
  embedding per label, recomputed every call (it depends on the weights only): at the defaults with
  11 classes ~0.63 GFLOPs per call, ~20 MFLOPs per frame with chunks of 32 (the image branch: ~0.6 G).
* joint: image features concatenated with the text embedding of each frame's fed-back label ->
  :class:`streamseg.models.memtcn.MemoryTCN` (SVTAS: 4 layers, 128 maps) -> logits (S, B, K, T).

Label feedback, through the state (so streaming, slot resets and ONNX export work unchanged): the last
state tensor is a ring (B, feedback_delay) of the labels of the last ``feedback_delay`` frames, stored as
floats ``label + 1`` (0 = no label: the start of a video, a padding frame; so the zero state is the start
of a video, as the ONNX runtime assumes; integers are exact floats, up to 256 classes even in bfloat16).
Frame t of a call receives the label of frame
``t - feedback_delay``: with chunks of ``feedback_delay`` frames that is "the same frame of the previous
chunk" (SVTAS's previous-chunk labels). A call writes its own predictions (last-stage argmax) into the
ring; in training the engine replaces them with the ground truth through :meth:`Transeger.teacher_force`
(teacher forcing, as SVTAS), so the next chunk sees true labels; evaluation uses the model's own.

Exactness. The feedback is chunk-wise: a frame whose delayed label lies inside the *same* call cannot
have it (the call runs in parallel), so it gets "no label". Hence:

* any split of a video into calls of at most ``feedback_delay`` frames gives the same logits (the
  ``feedback_delay`` attribute states this; ``tests/models/test_contract.py`` checks it);
* a longer call (a whole video at once) equals that only on its first ``feedback_delay`` frames.
  Train and stream with ``train.chunk_size <= feedback_delay`` (`transeger_module` enforces it).

Differences from SVTAS: causal TSM (SVTAS's looks ahead inside a chunk); the previous chunk's labels
aligned frame to frame instead of time-flipped; one prompt per class instead of one per frame (SVTAS adds
the segment's ordinal, its length and the frame's position as words, T prompts per chunk), since the
MemoryTCN sees the temporal context; a word vocabulary of the class names instead of CLIP's BPE; width
256 instead of 512 by default; no ``ctx_init`` words.

``text_weights``: a local file with a state dict of :class:`PromptTextEncoder` (``torch.save(
model.text.state_dict(), path)``, keys optionally prefixed ``text.``), loaded with
``torch.load(weights_only=True)``; keys, shapes and the tokenised prompts (i.e. the class names) must
match, else :class:`streamseg.models.checkpoint.WeightsError` names what differs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamseg.models.checkpoint import WeightsError, load_weights
from streamseg.models.hooks import FeedsBackLabels
from streamseg.models.memtcn import MemoryTCN
from streamseg.models.mstcn import check_input
from streamseg.models.tsm import tsm_mobilenet_v2

__all__ = [
    "ClassNameTokenizer",
    "PromptTextEncoder",
    "Transeger",
    "transeger_mobilenet_v2",
    "transeger_features",
]

PAD, SOT, EOT = 0, 1, 2  # special token ids; words follow from 3
_SPECIALS = ("<pad>", "<sot>", "<eot>")


class ClassNameTokenizer:
    """Word-level tokenizer over a fixed list of class names.

    ``words("takeBowl_2")`` -> ``["take", "bowl", "2"]`` (camelCase split, lower case, any other
    character separates). ``vocab`` = the specials then the sorted distinct words, so the same class
    names always give the same ids.
    """

    def __init__(self, class_names: Sequence[str]) -> None:
        self.class_names = list(class_names)
        for i, name in enumerate(self.class_names):
            if not self.words(name):
                raise ValueError(f"ClassNameTokenizer: class {i} name {name!r} has no letters or digits")
        words = sorted({w for name in self.class_names for w in self.words(name)})
        self.vocab = [*_SPECIALS, *words]
        self._ids = {w: i for i, w in enumerate(self.vocab)}

    @staticmethod
    def words(name: str) -> list[str]:
        spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)  # "takeBowl" -> "take Bowl"
        return re.findall(r"[a-z0-9]+", spaced.lower())

    def encode(self, name: str) -> list[int]:
        return [self._ids[w] for w in self.words(name)]


class _Block(nn.Module):
    """Pre-LN transformer block with causal self-attention: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:  # (N, L, W)
        n, length, width = x.shape
        q, k, v = self.qkv(self.ln_1(x)).view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (N, heads, L, W / heads)
        x = x + self.out(att.transpose(1, 2).reshape(n, length, width))
        return x + self.mlp(self.ln_2(x))


class PromptTextEncoder(nn.Module):
    """Class names -> one embedding per label, (K + 1, out_dim); row 0 is "no label", row k + 1 class k.

    Args:
        class_names: the K class names (words as described in :class:`ClassNameTokenizer`).
        out_dim: embedding size handed to the joint network.
        width / layers / heads: the transformer (CLIP-style, pre-LN, causal mask, [EOT] pooling).
        context_tokens: learnable context vectors after [SOT] (CoOp); 0 for none.
        class_specific_context: one set of context vectors per prompt (SVTAS's default) or one shared.

    ``forward() -> (K + 1, out_dim)``. Buffers: ``prompt_tokens`` (K + 1, L) token ids with ``PAD`` at the
    context positions (saved in checkpoints, so weights for other class names are detected), ``eot_index``.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        out_dim: int = 64,
        width: int = 256,
        layers: int = 3,
        heads: int = 4,
        context_tokens: int = 8,
        class_specific_context: bool = True,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"PromptTextEncoder: width {width} must be a multiple of heads {heads}")
        if context_tokens < 0 or layers < 1:
            raise ValueError(f"PromptTextEncoder: need context_tokens >= 0 and layers >= 1, "
                             f"got {context_tokens}, {layers}")
        self.tokenizer = ClassNameTokenizer(class_names)
        self.num_classes = len(self.tokenizer.class_names)
        self.context_tokens = context_tokens
        names = [self.tokenizer.encode(n) for n in self.tokenizer.class_names]
        length = 1 + context_tokens + max(len(w) for w in names) + 1  # [SOT] ctx words [EOT]
        tokens = torch.full((self.num_classes + 1, length), PAD, dtype=torch.long)
        eot = torch.empty(self.num_classes + 1, dtype=torch.long)
        for row, words in enumerate([[], *names]):  # row 0: "no label", the context alone
            seq = [SOT, *[PAD] * context_tokens, *words, EOT]
            tokens[row, : len(seq)] = torch.tensor(seq)
            eot[row] = len(seq) - 1
        self.register_buffer("prompt_tokens", tokens)
        self.register_buffer("eot_index", eot, persistent=False)

        self.token_embedding = nn.Embedding(len(self.tokenizer.vocab), width)
        self.positional_embedding = nn.Parameter(torch.empty(length, width))
        prompts = self.num_classes + 1 if class_specific_context else 1
        self.context = nn.Parameter(torch.empty(prompts, context_tokens, width))
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(layers))
        self.ln_final = nn.LayerNorm(width)
        self.projection = nn.Linear(width, out_dim, bias=False)
        self.out_dim = out_dim
        self._init_weights(width, layers)

    def _init_weights(self, width: int, layers: int) -> None:
        # CLIP's text-tower initialisation; residual projections scaled by 1/sqrt(2 * layers)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.context, std=0.02)  # CoOp
        for block in self.blocks:
            nn.init.normal_(block.qkv.weight, std=width**-0.5)
            nn.init.normal_(block.out.weight, std=width**-0.5 / math.sqrt(2 * layers))
            nn.init.normal_(block.mlp[0].weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp[2].weight, std=width**-0.5 / math.sqrt(2 * layers))
        nn.init.normal_(self.projection.weight, std=width**-0.5)

    @property
    def vocab(self) -> list[str]:
        return self.tokenizer.vocab

    def forward(self) -> Tensor:
        emb = self.token_embedding(self.prompt_tokens)  # (K + 1, L, W)
        n = self.context_tokens
        context = self.context.expand(emb.shape[0], -1, -1)
        x = torch.cat([emb[:, :1], context, emb[:, 1 + n :]], dim=1) + self.positional_embedding
        for block in self.blocks:
            x = block(x)
        x = self.ln_final(x)
        pooled = x[torch.arange(x.shape[0], device=x.device), self.eot_index]  # (K + 1, W)
        return self.projection(pooled)

    def load_file(self, path: str | Path) -> None:
        """Load ``text_weights`` (see the module docstring); WeightsError if it does not fit."""
        if not Path(path).is_file():
            raise WeightsError(f"model.text_weights={path}: no such file")
        built = self.prompt_tokens.clone()
        try:
            load_weights(self, path, rename=lambda k: k.removeprefix("text."))
        except WeightsError as e:
            raise WeightsError(f"model.text_weights: {e}\n  (text_width, text_layers, context_tokens, "
                               "class_specific_context and the class names must be those the file was saved "
                               "with)") from e
        if not torch.equal(self.prompt_tokens, built):
            self.prompt_tokens.copy_(built)
            raise WeightsError(f"model.text_weights={path}: saved for other class names (its tokenised prompts "
                               f"differ from those of {self.tokenizer.class_names})")


class _FeatureInput(nn.Module):
    """The identity "encoder" for pre-extracted features (B, D, T): stateless, causal."""

    lookahead = 0
    num_state_tensors = 0

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.out_channels = in_channels

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        return ()

    def forward(self, x: Tensor, state: tuple[Tensor, ...], mask: Tensor | None) -> tuple[Tensor, tuple]:
        check_input(x, mask, self.out_channels, "Transeger.forward")
        return x, ()


class Transeger(nn.Module, FeedsBackLabels):
    """Image branch + text branch over fed-back labels + MemoryTCN joint network (module docstring).

    Args:
        encoder: frames or features -> (B, D, T), with ``out_channels``, ``lookahead``,
            ``num_state_tensors``, ``init_state`` (a :class:`streamseg.models.tsm.TSMEncoder`).
        text: the :class:`PromptTextEncoder` over the K class names.
        joint: a :class:`MemoryTCN` with ``in_channels = image_dim + text.out_dim``.
        image_dim: the image features' size after the 1x1 projection.
        feedback_delay: frames between a label and the frame that receives it; calls of at most this
            many frames give exact streaming (module docstring).
        dropout: on the image features before the projection (SVTAS's pooling neck: 0.5).

    State: the encoder's tensors, the joint's, then the label ring (B, feedback_delay).
    ``forward(x, state, mask (B, 1, T) | None) -> (logits (S, B, K, T), new_state)``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        text: PromptTextEncoder,
        joint: MemoryTCN,
        image_dim: int = 64,
        feedback_delay: int = 32,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if feedback_delay < 1:
            raise ValueError(f"Transeger: feedback_delay must be >= 1, got {feedback_delay}")
        if joint.in_channels != image_dim + text.out_dim:
            raise ValueError(f"Transeger: the joint network takes {joint.in_channels} channels, image_dim + "
                             f"text out_dim = {image_dim} + {text.out_dim}")
        if joint.num_classes != text.num_classes:
            raise ValueError(f"Transeger: {joint.num_classes} classes in the joint network, {text.num_classes} "
                             "class names in the text branch")
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.image_proj = nn.Conv1d(encoder.out_channels, image_dim, kernel_size=1)
        self.text = text
        self.joint = joint
        self.num_classes = joint.num_classes
        self.feedback_delay = feedback_delay
        self.lookahead: int | None = encoder.lookahead  # the joint and the feedback are causal
        self._num_joint_state = len(joint.init_state(1))

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> tuple[Tensor, ...]:
        """Encoder state, joint state, then zeros (B, feedback_delay): no labels yet."""
        ring = torch.zeros(batch_size, self.feedback_delay, device=device)
        return self.encoder.init_state(batch_size, device) + self.joint.init_state(batch_size, device) + (ring,)

    def forward(
        self, x: Tensor, state: tuple[Tensor, ...], mask: Tensor | None = None
    ) -> tuple[Tensor, tuple[Tensor, ...]]:
        n_enc = self.encoder.num_state_tensors
        expected = n_enc + self._num_joint_state + 1
        if len(state) != expected:
            raise ValueError(f"Transeger.forward: expected a state of {expected} tensors (from init_state), "
                             f"got {len(state)}")
        features, encoder_state = self.encoder(x, tuple(state[:n_enc]), mask)
        ring = state[-1]
        batch, length = features.shape[0], features.shape[2]
        image = self.image_proj(self.dropout(features))
        # frame t reads the label of frame t - delay: ring[:, t] while t < delay, else none (same call)
        pos = torch.arange(length, device=features.device)
        index = pos.clamp(max=self.feedback_delay - 1).unsqueeze(0).expand(batch, length)
        fed = torch.where(pos < self.feedback_delay, torch.gather(ring, 1, index), torch.zeros_like(ring[:, :1]))
        label_emb = F.embedding(fed.long(), self.text()).transpose(1, 2).to(image.dtype)  # (B, text_dim, T)
        logits, joint_state = self.joint(torch.cat([image, label_emb], dim=1), tuple(state[n_enc:-1]), mask)
        pred = logits[-1].argmax(dim=1) + 1  # (B, T): label + 1
        if mask is not None:
            pred = pred * (mask[:, 0] > 0)  # padding frames feed back "no label"
        new_ring = torch.cat([ring, pred.to(ring.dtype)], dim=1)[:, -self.feedback_delay :]
        return logits, encoder_state + joint_state + (new_ring,)

    def teacher_force(
        self, state: tuple[Tensor, ...], labels: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, ...]:
        """``state`` returned by the call on a chunk, with that chunk's ground truth (B, T) in place of the
        model's own predictions in the label ring (training only). Frames labelled < 0 (ignored) or masked
        keep what the call wrote."""
        ring = state[-1]
        if labels.dim() != 2 or labels.shape[0] != ring.shape[0]:
            raise ValueError(f"Transeger.teacher_force: expected labels (B, T) with B = {ring.shape[0]}, "
                             f"got {tuple(labels.shape)}")
        if bool((labels >= self.num_classes).any()):
            raise ValueError(f"Transeger.teacher_force: labels must be < num_classes = {self.num_classes} "
                             f"(or < 0 to ignore), got {int(labels.max())}")
        n = min(labels.shape[1], self.feedback_delay)
        gt = labels[:, -n:]
        valid = gt >= 0
        if mask is not None:
            valid = valid & (mask[:, 0, -n:] > 0)
        tail = torch.where(valid, (gt + 1).to(ring.dtype), ring[:, -n:])
        return tuple(state[:-1]) + (torch.cat([ring[:, : self.feedback_delay - n], tail], dim=1),)


def _text_branch(
    num_classes: int,
    class_names: Sequence[str] | None,
    text_dim: int,
    text_width: int,
    text_layers: int,
    text_heads: int,
    context_tokens: int,
    class_specific_context: bool,
    text_weights: str | None,
) -> PromptTextEncoder:
    if class_names is None:
        class_names = [f"class {k}" for k in range(num_classes)]  # no names: one learned word per class
    elif len(class_names) != num_classes:
        raise ValueError(f"Transeger: {len(class_names)} class names for num_classes = {num_classes}")
    text = PromptTextEncoder(class_names, text_dim, text_width, text_layers, text_heads, context_tokens,
                             class_specific_context)
    if text_weights is not None:
        text.load_file(text_weights)
    return text


def transeger_mobilenet_v2(
    num_classes: int,
    class_names: Sequence[str] | None = None,
    num_stages: int = 1,
    num_layers: int = 4,
    num_maps: int = 128,
    dropout: float = 0.5,
    image_dim: int = 64,
    text_dim: int = 64,
    text_width: int = 256,
    text_layers: int = 3,
    text_heads: int = 4,
    context_tokens: int = 8,
    class_specific_context: bool = True,
    feedback_delay: int = 32,
    shift_div: int = 8,
    causal: bool = True,
    weights: str | None = None,
    text_weights: str | None = None,
    frame_size: tuple[int, int] = (224, 224),
) -> Transeger:
    """Transeger on RGB frames (B, 3, T, H, W): causal MobileNetV2-TSM image branch (``weights``: a
    torchvision MobileNetV2 state dict), joint MemoryTCN of ``num_stages`` x ``num_layers`` x ``num_maps``.
    Without ``class_names`` the prompts are "class <k>"."""
    encoder = tsm_mobilenet_v2(shift_div=shift_div, causal=causal, weights=weights, frame_size=frame_size)
    text = _text_branch(num_classes, class_names, text_dim, text_width, text_layers, text_heads, context_tokens,
                        class_specific_context, text_weights)
    joint = MemoryTCN(image_dim + text_dim, num_classes, num_stages, num_layers, num_maps, dropout)
    return Transeger(encoder, text, joint, image_dim, feedback_delay, dropout)


def transeger_features(
    in_channels: int,
    num_classes: int,
    class_names: Sequence[str] | None = None,
    num_stages: int = 1,
    num_layers: int = 4,
    num_maps: int = 128,
    dropout: float = 0.5,
    image_dim: int = 64,
    text_dim: int = 64,
    text_width: int = 256,
    text_layers: int = 3,
    text_heads: int = 4,
    context_tokens: int = 8,
    class_specific_context: bool = True,
    feedback_delay: int = 32,
    text_weights: str | None = None,
) -> Transeger:
    """Transeger on pre-extracted features (B, in_channels, T) in place of the image branch's encoder."""
    text = _text_branch(num_classes, class_names, text_dim, text_width, text_layers, text_heads, context_tokens,
                        class_specific_context, text_weights)
    joint = MemoryTCN(image_dim + text_dim, num_classes, num_stages, num_layers, num_maps, dropout)
    return Transeger(_FeatureInput(in_channels), text, joint, image_dim, feedback_delay, dropout)
