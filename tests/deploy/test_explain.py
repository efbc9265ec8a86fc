"""Class activation maps (`streamseg.deploy.explain`, `streamseg explain`): on toy models whose output
depends on one image region the map peaks there, streamed chunk by chunk with the state carried; clip
backbones' 3D layers map to frames; the mp4 shows frame and map side by side."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch import Tensor, nn

from streamseg.deploy.explain import cam_chunks, default_layer, write_explanation
from streamseg.models import EncoderHead, FramewiseHead, MemoryTCN, r2plus1d_18_encoder, x3d_xs_encoder

from .test_infer import tiny_meta

pytest.importorskip("captum")
pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")  # tests/conftest.py

SIZE = 16
REGION = (slice(2, 7), slice(9, 15))  # rows 2-6, columns 9-14: off-centre and not square (catches a transpose)


class _RegionEncoder(nn.Module):
    """A per-frame conv whose features read only REGION (the conv output is masked) or, with
    ``region=False``, the whole frame (global average)."""

    def __init__(self, region: bool, channels: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3, padding=1)
        mask = torch.zeros(SIZE, SIZE)
        mask[REGION] = 1
        self.register_buffer("mask", mask if region else torch.ones(SIZE, SIZE), persistent=False)
        self.out_channels, self.lookahead, self.num_state_tensors = channels, 0, 0

    def init_state(self, batch_size: int, device=None) -> tuple[Tensor, ...]:
        return ()

    def forward(self, x: Tensor, state=(), mask=None) -> tuple[Tensor, tuple]:
        b, _, t, h, w = x.shape
        a = torch.relu(self.conv(x.transpose(1, 2).reshape(b * t, 3, h, w))) * self.mask
        return (a.sum((2, 3)) / self.mask.sum()).reshape(b, t, -1).transpose(1, 2), ()


def _chunks(x: Tensor, size: int):
    return (x[:, :, i : i + size] for i in range(0, x.shape[2], size))


def _inside(maps: Tensor) -> Tensor:
    """Per frame, the share of the map's mass inside REGION."""
    return maps[:, REGION[0], REGION[1]].sum((1, 2)) / maps.sum((1, 2)).clamp_min(1e-12)


def test_the_map_of_a_model_that_reads_one_region_lies_in_it() -> None:
    """Output depends on REGION only (through a causal MemoryTCN head with state): HiResCAM's maps put all
    their mass there, on every frame, chunk after chunk; the chunks' logits are the whole video's."""
    torch.manual_seed(0)
    net = EncoderHead(_RegionEncoder(region=True), MemoryTCN(4, 3, num_stages=1, num_layers=2, num_maps=8)).eval()
    x = torch.randn(1, 3, 10, SIZE, SIZE)
    out = list(cam_chunks(net, _chunks(x, 4), method="hirescam"))
    maps, logits = torch.cat([m for m, _ in out]), torch.cat([lg for _, lg in out], dim=1)
    assert maps.shape == (10, SIZE, SIZE) and maps.amax() == pytest.approx(1.0)
    assert (maps.flatten(1).amax(1) > 0).all(), "a frame without any positive evidence: pick another seed"
    # bilinear upsampling of a same-size map is the identity: nothing leaks outside the region
    assert torch.allclose(_inside(maps), torch.ones(10), atol=1e-6), _inside(maps)
    with torch.no_grad():
        whole, _ = net(x, net.init_state(1))
    torch.testing.assert_close(logits, whole[-1, 0])  # the state was carried from chunk to chunk


def test_gradcam_peaks_where_the_evidence_is() -> None:
    """Global-average model on dark frames with a bright patch that moves: Grad-CAM (the default) follows
    the patch frame by frame."""
    encoder = _RegionEncoder(region=False, channels=1)
    head = FramewiseHead(1, 2)
    with torch.no_grad():
        encoder.conv.weight.fill_(1 / 27)
        encoder.conv.bias.zero_()
        head.net[-1].weight.copy_(torch.tensor([[1.0], [-1.0]]).view(2, 1, 1))  # class 0 = brightness: predicted
        head.net[-1].bias.zero_()
    net = EncoderHead(encoder, head).eval()
    x = torch.zeros(1, 3, 6, SIZE, SIZE)
    spots = [(3, 12), (4, 11), (5, 10), (10, 3), (11, 4), (12, 5)]
    for t, (r, c) in enumerate(spots):
        x[0, :, t, r - 1 : r + 2, c - 1 : c + 2] = 1.0
    maps = torch.cat([m for m, _ in cam_chunks(net, _chunks(x, 4))])
    peaks = [divmod(int(m.argmax()), SIZE) for m in maps]
    assert peaks == spots


def test_the_default_layer_is_the_last_with_a_map_in_space() -> None:
    """X3D's last convolution is its 2048-d layer after the spatial pool (1x1): the default is conv5."""
    torch.manual_seed(0)
    net = EncoderHead(x3d_xs_encoder(frame_size=(64, 64)), FramewiseHead(2048, 3)).eval()
    x = torch.randn(1, 3, 2, 64, 64)
    assert default_layer(net) is net.encoder.trunk.net.lin5  # without an example: the last convolution
    assert default_layer(net, x) is net.encoder.trunk.net.conv5  # 2x2 positions at 64x64


def test_clip_backbone_maps_cover_every_frame() -> None:
    torch.manual_seed(0)
    encoder = r2plus1d_18_encoder(clip_len=2, context=2, frame_size=(SIZE, SIZE))
    net = EncoderHead(encoder, FramewiseHead(512, 3)).eval()
    assert isinstance(default_layer(net), nn.Conv3d)
    maps = torch.cat([m for m, _ in cam_chunks(net, _chunks(torch.randn(1, 3, 6, SIZE, SIZE), 4))])
    assert maps.shape == (6, SIZE, SIZE) and torch.isfinite(maps).all() and 0 <= maps.min() <= maps.max() <= 1


def _video(path: Path, frames: int = 8) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=15)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for t in range(frames):
            image = np.full((SIZE, SIZE, 3), 20 * t, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_write_explanation_puts_frame_and_map_side_by_side(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = EncoderHead(_RegionEncoder(region=True), MemoryTCN(4, 4, num_stages=1, num_layers=2, num_maps=8)).eval()
    video, out = tmp_path / "v.mp4", tmp_path / "explain" / "v_cam.mp4"
    _video(video)
    meta = tiny_meta(sample_shape=[3, SIZE, SIZE], sample_rate=2)
    summary = write_explanation(net, meta, video, out, chunk=3, width=64, target="c1")
    assert summary["frames"] == 4 and summary["target"] == "c1"
    with av.open(str(out)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == 4 and frames[0].shape[1] == 64  # frame | map, scaled to 64 wide
    with pytest.raises(ValueError, match="--class nope: not a class of this model; classes: c0, c1"):
        write_explanation(net, meta, video, out, target="nope")
    with pytest.raises(ValueError, match="--layer encoder.nope: no such module; .*encoder.conv"):
        write_explanation(net, meta, video, out, layer="encoder.nope")
    with pytest.raises(ValueError, match=r"--method gradcam\+\+: expected one of gradcam, hirescam"):
        write_explanation(net, meta, video, out, method="gradcam++")


def test_cli_names_what_is_wrong_before_any_work(tmp_path: Path) -> None:
    from streamseg.cli.main import main

    video = tmp_path / "v.mp4"
    _video(video, frames=2)
    with pytest.raises(SystemExit, match=r"not a run directory \(no config/params.json\)"):
        main(["explain", str(tmp_path), str(video)])
    with pytest.raises(SystemExit, match="absent.mp4: no such video file"):
        main(["explain", str(tmp_path), str(tmp_path / "absent.mp4")])


def test_explain_a_trained_run_from_the_cli_and_the_api(tmp_path: Path, synth_video_root: Path) -> None:
    """A tiny run on frames (MobileNetV2 at 16 x 16, one epoch), then `streamseg explain RUN VIDEO`."""
    from streamseg.api import Run
    from streamseg.cli.main import main
    from streamseg.config import load_configs, resolve_params
    from streamseg.engine.runner import Hardware, train_and_test

    from ..conftest import TINY_STREAM

    configs = load_configs("synth", "mobilenet_framewise", "chunk32")
    tiny = [TINY_STREAM[i + 1] for i in range(0, len(TINY_STREAM), 2)]
    params, applied = resolve_params(configs, [*tiny, f"data.root={synth_video_root}"])
    run_dir = train_and_test(configs, params, applied, tmp_path / "exp", Hardware(), new=True)[0].path
    video = sorted((synth_video_root / "Videos").glob("*.mp4"))[0]
    assert main(["explain", str(run_dir), str(video), "--max-frames", "10", "--class", "background"]) == 0
    out = Path(run_dir) / "explain" / f"{video.stem}_cam.mp4"
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10
    api_out = Run(run_dir).explain(video, tmp_path / "api.mp4", max_frames=4, method="hirescam")
    assert api_out.is_file()
