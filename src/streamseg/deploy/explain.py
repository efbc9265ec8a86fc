"""Class activation maps of a streaming model on frames, chunk by chunk with the state carried.

Grad-CAM (Selvaraju et al., ICCV 2017) through Captum's ``LayerGradCam`` (or HiResCAM, see
:func:`cam_chunks`): for each chunk, the score is
the sum over the chunk's frames of the last stage's logit of each frame's class (its predicted class, or
one chosen class); the gradients of that score at a convolution layer of the frame encoder, averaged over
space, weight the layer's channels, and the ReLU of the weighted sum is the map. The chunk runs with
the state of the previous chunks (detached: the map of a chunk explains that chunk's frames), then the
state moves on, as in `streamseg infer`.

Why Captum: it is PyTorch's own interpretability library (maintained under the pytorch org), depends on
torch, numpy and matplotlib only (pytorch-grad-cam pulls OpenCV, scikit-learn and ttach), and its
``forward_func`` may be any callable, so a streaming model's ``(x, state) -> (logits, state)`` call and its
(stages, B, K, T) logits are wrapped without adapting the model. Extra: ``pip install streamseg[explain]``.

Layers (``layer``: a module of the network; default :func:`default_layer`, the encoder's last
convolution whose output has more than one position in space): a 2D layer applied to every frame (TSM
encoders: output (T, C, h, w)) gives one map per frame; a 3D layer applied to the windows of a clip
backbone (`VideoEncoder`: (clips, C, T', h, w)) gives maps over each window's T' steps, nearest-upsampled
to the window's frames of which the clip's are kept, as the encoder does with its features. Maps are upsampled (bilinear) to the frame size and scaled to
[0, 1] per frame (a frame whose map is all zero stays zero).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["METHODS", "default_layer", "cam_chunks", "overlay", "explain_video", "write_explanation"]


def default_layer(net: nn.Module, x: Tensor | None = None) -> nn.Module:
    """The last ``Conv2d`` / ``Conv3d`` of ``net.encoder`` (or of ``net`` without an encoder); given an example
    chunk ``x``, the last one whose output still has more than one position in space (one forward pass
    finds out): a 1x1 map says nothing, e.g. X3D's 2048-d layer after the spatial pool."""
    convs = [m for m in getattr(net, "encoder", net).modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
    if not convs:
        raise ValueError(f"{type(net).__name__}: no Conv2d/Conv3d layer to explain; class activation maps need a "
                         "model on frames (TSM, video backbones), not on features")
    if x is None:
        return convs[-1]
    positions: dict[nn.Module, int] = {}
    hooks = [m.register_forward_hook(lambda m, _, out: positions.__setitem__(m, out.shape[-2:].numel()))
             for m in convs]
    try:
        with torch.no_grad():
            net(x, net.init_state(x.shape[0], x.device))
    finally:
        for hook in hooks:
            hook.remove()
    spatial = [m for m in convs if positions.get(m, 0) > 1]
    return spatial[-1] if spatial else convs[-1]


def _frame_maps(cam: Tensor, length: int, encoder: nn.Module) -> Tensor:
    """Captum's layer-shaped map -> (length, h, w): see the module docstring."""
    if cam.dim() == 4 and cam.shape[0] == length:  # (T, 1, h, w): a 2D layer on every frame
        return cam[:, 0]
    if cam.dim() == 5 and hasattr(encoder, "clip_len"):  # (clips, 1, T', h, w): a clip backbone's windows
        window, clip = encoder.context + encoder.clip_len, encoder.clip_len
        steps = cam[:, 0]  # (clips, T', h, w)
        index = torch.div(torch.arange(window, device=cam.device) * steps.shape[1], window, rounding_mode="floor")
        per_frame = steps.index_select(1, index)[:, window - clip:]  # nearest, the clip's frames
        return per_frame.reshape(-1, *steps.shape[2:])[:length]
    raise ValueError(f"cannot map a layer output of shape {tuple(cam.shape)} to {length} frames: choose a layer "
                     "applied to every frame (2D) or to a clip backbone's windows (3D)")


METHODS = ("gradcam", "hirescam")


def cam_chunks(net: nn.Module, chunks: Iterator[Tensor], layer: nn.Module | None = None,
               target: int | None = None, method: str = "gradcam") -> Iterator[tuple[Tensor, Tensor]]:
    """For each normalised chunk ``(1, 3, T, H, W)``, in order: ``(maps (T, H, W) in [0, 1], logits (K, T))``
    (the last stage's), the state carried from chunk to chunk. ``target``: the class to explain (default:
    each frame's prediction). ``method``: ``"gradcam"`` (channel weights = gradients averaged over space)
    or ``"hirescam"`` (Draelos & Carin 2020: gradient x activation at each position, summed over channels;
    Captum's ``LayerGradientXActivation``), which stays faithful where the model reads only part of the
    image (after a global average pool the two agree)."""
    from captum.attr import LayerGradCam, LayerGradientXActivation

    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")

    encoder = getattr(net, "encoder", net)
    state: tuple[Tensor, ...] | None = None
    for x in chunks:
        layer = default_layer(net, x) if layer is None else layer  # chosen on the first chunk
        state = net.init_state(1, x.device) if state is None else state
        out: dict[str, object] = {}

        def score(inputs: Tensor, state=state, out=out) -> Tensor:
            logits, new_state = net(inputs, state)
            last = logits[-1]  # (1, K, T)
            classes = last.argmax(1, keepdim=True) if target is None else torch.full_like(last[:, :1], target).long()
            out["logits"], out["state"] = last.detach(), tuple(t.detach() for t in new_state)
            return last.gather(1, classes).sum(dim=(1, 2))  # (1,): the chunk's score

        with torch.enable_grad():
            if method == "gradcam":
                cam = LayerGradCam(score, layer).attribute(x, relu_attributions=True).detach()
            else:
                cam = LayerGradientXActivation(score, layer).attribute(x).detach().sum(1, keepdim=True).clamp_min(0)
        maps = _frame_maps(cam, x.shape[2], encoder)  # (T, h, w)
        maps = F.interpolate(maps[:, None], size=tuple(x.shape[3:]), mode="bilinear", align_corners=False)[:, 0]
        peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12).view(-1, 1, 1)
        state = out["state"]
        yield (maps.clamp_min(0) / peak), out["logits"][0]


def overlay(frames: np.ndarray, maps: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``uint8 (n, H, W, 3)`` frames and ``(n, H, W)`` maps in [0, 1] -> the frames with the maps drawn over
    them in the jet colour map, ``uint8 (n, H, W, 3)``."""
    from matplotlib import colormaps

    heat = colormaps["jet"](np.clip(maps, 0, 1))[..., :3] * 255
    return (frames * (1 - alpha) + heat * alpha).round().clip(0, 255).astype(np.uint8)


def explain_video(model: str | Path, video: str | Path, out: str | Path, **options) -> dict[str, object]:
    """``streamseg explain``: :func:`write_explanation` of the trained run (directory or checkpoint) ``model``."""
    from .runtime import load_trained_model

    if not Path(video).is_file():
        raise FileNotFoundError(f"{video}: no such video file")
    net, meta = load_trained_model(model)
    return write_explanation(net, meta, video, out, **options)


def write_explanation(net: nn.Module, meta, video: str | Path, out: str | Path, *, chunk: int | None = None,
                      target: str | None = None, layer: str | None = None, method: str = "gradcam",
                      width: int | None = None, max_frames: int | None = None) -> dict[str, object]:
    """``net`` (with its `DeployMeta` ``meta``) on ``video``, written to ``out`` (an mp4): per sampled frame,
    the frame and its CAM side by side above the label and timeline bar of `AnnotatedVideoWriter`.
    ``target``: a class name (default: each frame's prediction); ``layer``: a module name of the network
    (``dict(net.named_modules())``; default: :func:`default_layer`); ``method``: see :func:`cam_chunks`.
    Returns a summary."""
    from ..data.video import VideoFileSource
    from .annotate import AnnotatedVideoWriter

    if meta.input_kind != "frames":
        raise ValueError(f"{meta.source or 'the model'}: a model on features; class activation maps need frames")
    if method not in METHODS:
        raise ValueError(f"--method {method}: expected one of {', '.join(METHODS)}")
    target_id = _class_id(meta.class_names, target)
    modules = dict(net.named_modules())
    if layer is not None and layer not in modules:
        convs = [n for n, m in modules.items() if isinstance(m, (nn.Conv2d, nn.Conv3d))]
        raise ValueError(f"--layer {layer}: no such module; its last convolutions: {', '.join(convs[-8:])}")
    chunk = int(chunk or meta.chunk_size or 32)
    source = VideoFileSource(video, meta.sample_rate, size=tuple(meta.sample_shape[1:]))
    fps = (source.fps or meta.fps) / meta.sample_rate
    raw: list[Tensor] = []
    written = 0

    def chunks() -> Iterator[Tensor]:
        nonlocal written
        while max_frames is None or written < max_frames:
            frames = source.read(chunk if max_frames is None else min(chunk, max_frames - written))
            if len(frames) == 0:
                return
            raw.append(frames)
            written += len(frames)
            yield torch.from_numpy(meta.preprocess(frames))

    with source, AnnotatedVideoWriter(out, meta.class_names, fps, num_frames=_sampled(source, meta.sample_rate),
                                      bg_classes=meta.bg_classes, width=width) as writer:
        for maps, logits in cam_chunks(net, chunks(), modules[layer] if layer else None, target_id, method):
            frames = raw.pop(0).permute(0, 2, 3, 1).numpy()  # (n, H, W, 3) uint8
            conf, labels = logits.softmax(0).max(0)
            side = np.concatenate([frames, overlay(frames, maps.numpy())], axis=2)  # frame | CAM
            writer.write(list(side), labels.numpy(), conf.numpy())
    return {"video": str(video), "out": str(out), "frames": written, "chunk": chunk, "method": method,
            "target": target or "prediction", "layer": layer or "default (the encoder's last convolution with a map in space)"}


def _class_id(names: Sequence[str], target: str | None) -> int | None:
    if target is None:
        return None
    if target not in names:
        raise ValueError(f"--class {target}: not a class of this model; classes: {', '.join(names)}")
    return list(names).index(target)


def _sampled(source, sample_rate: int) -> int | None:
    n = getattr(source, "num_frames", None)
    return None if not n else (n + sample_rate - 1) // sample_rate
