"""The encoders and the segment cutter on tensors: what frames each feature reads (no video files)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from streamseg.extract.encoders import ClipEncoder, EncoderSpec, build_encoder, flow_encoder
from streamseg.extract.frames import SegmentCutter, device_reader, segments
from streamseg.models.checkpoint import WeightsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _reader(frames: torch.Tensor, block_log: list | None = None):
    """read(n) over a (T, ...) tensor, as a one-stream tuple."""
    pos = [0]

    def read(n: int):
        if block_log is not None:
            block_log.append(n)
        out = frames[pos[0] : pos[0] + n]
        pos[0] += out.shape[0]
        return (out,) if out.shape[0] else ()

    return read


def test_segments_clamp_at_the_edges_cover_every_frame_once_and_hold_little():
    frames = torch.arange(23.0)
    got, counts = [], []
    for (seg,), count in segments(_reader(frames), step=5, left=3, right=2):
        assert seg.shape[0] == 3 + 5 + 2  # every segment has the same shape, the last one too
        got.append(seg)
        counts.append(count)
    assert counts == [5, 5, 5, 5, 3]
    assert got[0].tolist() == [0, 0, 0, 0, 1, 2, 3, 4, 5, 6]  # frame 0 repeated before the start
    assert got[-1].tolist() == [17, 18, 19, 20, 21, 22, 22, 22, 22, 22]  # the last frame repeated after the end
    assert got[2].tolist() == list(range(7, 17))


def test_segments_of_an_empty_video_is_an_error():
    with pytest.raises(ValueError, match="no frames"):
        list(segments(_reader(torch.zeros(0)), 4, 1, 1))
    cutter = SegmentCutter(4, 1, 1)  # what the worker pipeline tests before cutting a video's end
    assert cutter.empty
    with pytest.raises(ValueError, match="no frames"):
        list(cutter.cut(ended=True))
    cutter.push((torch.zeros(3, 2),))
    assert not cutter.empty and [n for _, n in cutter.cut(ended=True)] == [3]
    assert not cutter.empty  # frames were decoded, even once all are cut


@pytest.mark.parametrize("blocks", [[23], [1] * 23, [7, 7, 7, 2], [3, 11, 9]], ids=str)
def test_the_cutter_fed_any_blocks_yields_the_segments_that_reading_yields(blocks):
    """The worker pipeline pushes blocks of whatever size the decoders send; each segment must come out as
    soon as its frames are in (not later: the network would wait) and equal what `segments` cuts."""
    frames = torch.arange(23.0)[:, None].expand(23, 2)
    want = [(seg, count) for (seg,), count in segments(_reader(frames), step=5, left=3, right=2)]
    cutter, got, pos = SegmentCutter(5, 3, 2), [], 0
    for n in blocks:
        cutter.push((frames[pos : pos + n],))
        pos += n
        got += [(seg, count) for (seg,), count in cutter.cut(ended=False)]
        # every segment whose last frame (p + 5 + 2 - 1) has arrived is out, none other
        assert len(got) == min(max(0, (pos - 2) // 5), 4)
        if len(got) < 4:  # the fifth (last) segment needs frames past the video's end: only `ended` cuts it
            assert cutter.missing() == 5 * len(got) + 7 - pos
    got += [(seg, count) for (seg,), count in cutter.cut(ended=True)]
    assert [c for _, c in got] == [c for _, c in want] == [5, 5, 5, 5, 3]
    for (a, _), (b, _) in zip(got, want):
        assert torch.equal(a, b)
    assert cutter.buf[0].shape[0] <= 3 + 5 + 2 + max(blocks)  # what no segment needs is dropped
    with pytest.raises(ValueError, match="no frames"):
        list(SegmentCutter(5, 3, 2).cut(ended=True))


class _LocalTrunk(nn.Module):
    """A trunk whose output step t reads input frames t-1..t+1 (no temporal downsampling), D = 4."""

    out_channels = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x):  # (N, 3, T, H, W) -> (N, 4, T)
        return self.conv(x).mean(dim=(3, 4))


def _run(encoder, video):
    out = []
    for (seg,), count in segments(_reader(video), encoder.step, encoder.left, encoder.right):
        out.append(encoder(seg)[:count])
    return torch.cat(out)


def test_window_mode_feature_is_the_clip_centred_on_the_frame():
    torch.manual_seed(0)
    trunk, video = _LocalTrunk(), torch.randn(19, 3, 2, 2)
    enc = ClipEncoder(trunk, "local", "window", window=6, chunk=1, overlap=0, batch=4, size=(2, 2), norm=((0,) * 3,) * 2)
    with torch.no_grad():
        got = _run(enc, video)
        t = 7  # window [t - 3, t + 3)
        expected = trunk(video[t - 3 : t + 3].transpose(0, 1)[None]).mean(dim=2)[0]
        first = trunk(video[[0, 0, 0, 0, 1, 2]].transpose(0, 1)[None]).mean(dim=2)[0]
    assert got.shape == (19, 4)
    torch.testing.assert_close(got[t], expected)
    torch.testing.assert_close(got[0], first)


@pytest.mark.parametrize("chunk", [3, 8, 19])
def test_dense_mode_stitches_chunks_into_one_pass_when_the_overlap_covers_the_receptive_field(chunk):
    torch.manual_seed(0)
    trunk, video = _LocalTrunk(), torch.randn(19, 3, 2, 2)
    enc = ClipEncoder(trunk, "local", "dense", window=1, chunk=chunk, overlap=1, batch=1, size=(2, 2),
                      norm=((0,) * 3,) * 2)
    with torch.no_grad():
        got = _run(enc, video)
        # one pass over the whole video, edges replicated as the segments replicate them
        whole = trunk(video[[0, *range(19), 18]].transpose(0, 1)[None])[0, :, 1:-1].T
    torch.testing.assert_close(got, whole)


def test_flow_reader_pairs_each_frame_with_the_next_and_repeats_the_last_flow():
    frames = torch.arange(7, dtype=torch.uint8).view(7, 1, 1, 1).expand(7, 3, 8, 8).contiguous()

    def fake_flow(a, b):  # "flow" = b - a in both channels, so the pairing is visible
        d = (b.float() - a.float())[:, :1] * 10 + a.float()[:, :1]
        return d.expand(-1, 2, -1, -1).contiguous()

    pos = [0]

    def read(n):
        out = frames[pos[0] : pos[0] + n]
        pos[0] += out.shape[0]
        return out

    read_streams = device_reader(read, torch.device("cpu"), [((0.0,) * 3, (1 / 255,) * 3)], fake_flow)
    rgb, flow, sizes = [], [], []
    for n in (3, 1, 5, 5):
        got = read_streams(n)
        sizes.append(got[0].shape[0] if got else 0)
        if got:
            rgb.append(got[0][:, 0, 0, 0])
            flow.append(got[1][:, 0, 0, 0])
    assert sizes == [3, 1, 3, 0]  # short only at the end (segments() takes a short read as the end)
    assert torch.cat(rgb).tolist() == list(range(7))
    # frame t's flow is (t -> t + 1) = 10 + t; the last frame repeats the one before
    assert torch.cat(flow).tolist() == [10 + t for t in range(6)] + [15]


def test_flow_encoder_is_cross_modality_initialised_from_the_rgb_weights():
    torch.manual_seed(0)
    rgb = build_encoder(EncoderSpec("r2plus1d_18", size=(16, 16), mode="dense", chunk=4, overlap=0))
    flow = flow_encoder(rgb)
    w_rgb, w_flow = rgb.trunk.stem[0].weight, flow.trunk.stem[0].weight
    assert w_flow.shape[1] == 2
    torch.testing.assert_close(w_flow[:, 0], w_rgb.mean(dim=1))
    torch.testing.assert_close(w_flow[:, 1], w_rgb.mean(dim=1))
    torch.testing.assert_close(flow.trunk.layer4[0].conv1[0][0].weight, rgb.trunk.layer4[0].conv1[0][0].weight)
    with torch.no_grad():
        assert flow(torch.randn(4, 2, 16, 16)).shape == (4, 512)
    with pytest.raises(ValueError, match="video"):
        flow_encoder(build_encoder(EncoderSpec("mobilenet_v2", size=(16, 16))))


def test_weights_that_do_not_fit_and_bad_settings_fail_before_any_video(tmp_path):
    bad = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    with pytest.raises(WeightsError, match="other.pth"):
        build_encoder(EncoderSpec("mobilenet_v2", weights=str(bad)))
    with pytest.raises(ValueError, match="unknown encoder 'i3d'"):
        build_encoder(EncoderSpec("i3d"))
    with pytest.raises(ValueError, match="s3d: expects windows of >= 8 frames"):
        build_encoder(EncoderSpec("s3d", window=4, size=(32, 32)))
    with pytest.raises(ValueError, match="mode must be"):
        build_encoder(EncoderSpec("s3d", mode="sliding"))


def test_the_thumbnail_encoder_is_each_channels_mean_over_each_cell_and_has_no_weights(tmp_path):
    enc = build_encoder(EncoderSpec("thumbnail", batch=3))
    assert (enc.dim, enc.size, enc.left, enc.right, enc.step) == (192, (32, 32), 0, 0, 3)
    frames = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        got = enc(frames)
    # cell (r, c) of channel k covers rows 4r..4r+3 and columns 4c..4c+3 of the 32x32 frame
    want = frames.reshape(3, 3, 8, 4, 8, 4).mean(dim=(3, 5)).reshape(3, 192)
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="thumbnail encoder has no weights"):
        build_encoder(EncoderSpec("thumbnail", weights=str(tmp_path / "w.pth")))
