"""Transeger beyond the contract sweep: the class-name tokenizer and text branch, the label feedback
(teacher forcing in training, own predictions in evaluation), text weights from a file, the engine's
teacher-forcing hook, and a 1-epoch end-to-end run on the synthetic videos."""

from __future__ import annotations

import json
from functools import partial
from types import SimpleNamespace

import pytest
import torch

from streamseg.config import ConfigError, RunParams, TrainParams
from streamseg.engine import DatasetInfo, SegmentationModule
from streamseg.engine.batches import BatchKind
from streamseg.engine.checkpoint_eval import evaluate
from streamseg.engine.recipes.transeger import transeger_module
from streamseg.engine.runner import build_net
from streamseg.models import ClassNameTokenizer, SegmentationLoss, WeightsError, transeger_features

from ..conftest import TINY_STREAM, streamseg

D, K, DELAY = 6, 5, 4
NAMES = ["background", "take_bowl", "pour_milk", "take_cup", "stirMilk"]
TINY = dict(num_layers=3, num_maps=8, image_dim=8, text_dim=8, text_width=16, text_layers=1, text_heads=2,
            context_tokens=2, feedback_delay=DELAY)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _net(names=NAMES, **kw):
    torch.manual_seed(0)
    return transeger_features(D, len(names), names, **{**TINY, **kw}).eval()


def test_tokenizer_splits_names_into_a_shared_sorted_vocabulary():
    tok = ClassNameTokenizer(NAMES)
    assert tok.words("stirMilk") == ["stir", "milk"] and tok.words("Take-Bowl 2") == ["take", "bowl", "2"]
    assert tok.vocab == ["<pad>", "<sot>", "<eot>", "background", "bowl", "cup", "milk", "pour", "stir", "take"]
    assert tok.encode("take_cup") == [9, 5]
    assert ClassNameTokenizer(list(reversed(NAMES))).vocab == tok.vocab  # ids depend on the words only
    with pytest.raises(ValueError, match=r"class 1 name '__' has no letters or digits"):
        ClassNameTokenizer(["a", "__"])


def test_text_branch_embeds_every_label_differently_and_learns():
    net = _net()
    table = net.text()
    assert table.shape == (K + 1, 8)  # row 0: no label
    assert torch.cdist(table, table).add(torch.eye(K + 1)).min() > 1e-3  # all rows distinct
    # [SOT] ctx ctx words [EOT], padded to the longest name (2 words)
    assert net.text.prompt_tokens.tolist()[0] == [1, 0, 0, 2, 0, 0]
    assert net.text.eot_index.tolist() == [3, 4, 5, 5, 5, 5]
    table.square().sum().backward()
    assert net.text.context.grad.abs().sum() > 0 and net.text.token_embedding.weight.grad.abs().sum() > 0


def test_without_class_names_each_class_gets_its_own_word():
    net = transeger_features(D, K, None, **TINY)
    assert net.text.tokenizer.class_names == [f"class {k}" for k in range(K)]
    with pytest.raises(ValueError, match="2 class names for num_classes = 5"):
        transeger_features(D, K, ["a", "b"], **TINY)


def test_eval_feeds_back_own_predictions_and_padding_feeds_none():
    net = _net()
    x = torch.randn(2, D, 3)
    mask = torch.ones(2, 1, 3)
    mask[1, 0, 2] = 0
    with torch.no_grad():
        logits, state = net(x, net.init_state(2), mask)
    ring = state[-1]
    pred = logits[-1].argmax(1) + 1
    assert ring[:, :DELAY - 3].eq(0).all()  # older than the video: no label
    assert ring[0, -3:].tolist() == pred[0].float().tolist()
    assert ring[1, -3:].tolist() == [*pred[1, :2].float().tolist(), 0.0]


def test_teacher_forcing_changes_what_the_next_chunk_sees():
    net = _net()
    x = torch.randn(1, D, 2 * DELAY)
    first, second = x[:, :, :DELAY], x[:, :, DELAY:]
    with torch.no_grad():
        logits, own = net(first, net.init_state(1))
        pred = logits[-1].argmax(1)  # (1, DELAY)
        gt = (pred + 1) % K  # ground truth that disagrees with the prediction on every frame
        forced = net.teacher_force(own, gt)
        assert forced[-1].tolist() == (gt + 1).float().tolist()
        assert all(torch.equal(a, b) for a, b in zip(forced[:-1], own[:-1]))  # only the labels change
        next_own, _ = net(second, own)
        next_forced, _ = net(second, forced)
        # the same as a stream whose first chunk had predicted the ground truth
        manual = own[:-1] + ((gt + 1).float(),)
        next_manual, _ = net(second, manual)
    assert not torch.allclose(next_own, next_forced, atol=1e-4)
    torch.testing.assert_close(next_forced, next_manual)
    # ignored (-100) and masked frames keep the model's own prediction
    partial_gt = gt.clone()
    partial_gt[0, 0] = -100
    mask = torch.ones(1, 1, DELAY)
    mask[0, 0, 1] = 0
    kept = net.teacher_force(own, partial_gt, mask)[-1]
    assert kept[0, :2].tolist() == own[-1][0, :2].tolist() and kept[0, 2:].tolist() == (gt[0, 2:] + 1).float().tolist()
    with pytest.raises(ValueError, match="labels must be < num_classes = 5"):
        net.teacher_force(own, torch.full((1, DELAY), K))


def test_offline_chunked_training_forward_teacher_forces_and_evaluation_does_not():
    net = _net()
    module = SegmentationModule(net, info=DatasetInfo("t", NAMES, [], D, 15.0, 1), loss=SegmentationLoss(K),
                                optimizer=torch.optim.Adam, chunk_size=DELAY)
    x, mask = torch.randn(2, D, 3 * DELAY), torch.ones(2, 3 * DELAY)
    labels = torch.randint(0, K, (2, 3 * DELAY))
    with torch.no_grad():
        forced, own = module(x, mask, labels), module(x, mask)
        state, outs_forced, outs_own = net.init_state(2), [], []
        own_state = net.init_state(2)
        for start in range(0, 3 * DELAY, DELAY):
            sl = slice(start, start + DELAY)
            out, state = net(x[:, :, sl], state, mask[:, None, sl])
            state = net.teacher_force(state, labels[:, sl], mask[:, None, sl])
            outs_forced.append(out)
            out, own_state = net(x[:, :, sl], own_state, mask[:, None, sl])
            outs_own.append(out)
    torch.testing.assert_close(forced, torch.cat(outs_forced, -1))
    torch.testing.assert_close(own, torch.cat(outs_own, -1))
    assert not torch.allclose(forced[..., DELAY:], own[..., DELAY:], atol=1e-4)


def test_text_weights_load_from_a_file_and_misfits_are_named(tmp_path):
    source = _net()
    with torch.no_grad():
        source.text.context.add_(1.0)
    path = tmp_path / "text.pt"
    torch.save(source.text.state_dict(), path)
    loaded = transeger_features(D, K, NAMES, **TINY, text_weights=str(path))
    torch.testing.assert_close(loaded.text(), source.text())
    prefixed = tmp_path / "prefixed.pt"
    torch.save({f"text.{k}": v for k, v in source.text.state_dict().items()}, prefixed)
    assert torch.equal(transeger_features(D, K, NAMES, **TINY, text_weights=str(prefixed)).text.context,
                       source.text.context)
    with pytest.raises(WeightsError, match=r"model\.text_weights=.*absent\.pt: no such file"):
        transeger_features(D, K, NAMES, **TINY, text_weights=str(tmp_path / "absent.pt"))
    with pytest.raises(WeightsError, match=r"(?s)shape mismatches .*token_embedding\.weight.*text_width"):
        transeger_features(D, K, NAMES, **{**TINY, "text_width": 32}, text_weights=str(path))
    other = ["background", "take_bowl", "pour_milk", "take_cup", "stir_bowl"]  # same vocabulary size
    with pytest.raises(WeightsError, match="saved for other class names"):
        transeger_features(D, K, other, **TINY, text_weights=str(path))


def test_build_net_passes_class_names_only_to_configs_that_take_them():
    """A model config declares TAKES_CLASS_NAMES (config.loader.OPTIONAL); its signature is not inspected."""
    info = SimpleNamespace(in_channels=D, num_classes=K, class_names=NAMES)
    seen = {}

    def with_names(p, in_channels, num_classes, class_names=None):
        seen["names"] = class_names

    def without(p, in_channels, num_classes):
        seen["plain"] = (in_channels, num_classes)

    build_net(SimpleNamespace(build_model=with_names, TAKES_CLASS_NAMES=True), None, info)
    build_net(SimpleNamespace(build_model=without), None, info)
    assert seen == {"names": NAMES, "plain": (D, K)}
    build_net(SimpleNamespace(build_model=with_names), None, info)  # not declared: no names
    assert seen["names"] is None


def test_recipe_rejects_chunks_longer_than_the_feedback_delay():
    info = DatasetInfo("t", NAMES, [], 3, 15.0, 1, batch_kind=BatchKind.STREAMS)
    params = RunParams(data=SimpleNamespace(input="video"), model=None, train=TrainParams(chunk_size=DELAY + 1))
    with pytest.raises(ConfigError, match=r"train.chunk_size=5 must be between 1 and model.feedback_delay=4"):
        transeger_module(_net(), params, info)
    params.train.chunk_size = DELAY
    assert transeger_module(_net(), params, info).stream_batches


def test_stream_training_teacher_forces_and_evaluation_uses_own_predictions(synth_video_root):
    """In-process fit + test on streams: every training chunk goes through teacher_force with its ground
    truth (so the next chunk's state holds it), no evaluation chunk does."""
    import pytorch_lightning as pl

    from streamseg.engine import VideoStreamDataModule
    from streamseg.models import transeger_mobilenet_v2

    dm = VideoStreamDataModule(str(synth_video_root), 1, chunk_size=8, frame_size=(16, 16), batch_size=2,
                               bg_classes=("background",))
    dm.setup()
    info = dm.info
    torch.manual_seed(0)
    net = transeger_mobilenet_v2(info.num_classes, info.class_names, frame_size=(16, 16),
                                 **{**TINY, "feedback_delay": 8})
    calls = []
    original = net.teacher_force

    def spy(state, labels, mask=None):
        new = original(state, labels, mask)
        calls.append(net.training)
        valid = (labels >= 0) & (mask[:, 0] > 0)
        assert torch.equal(new[-1][:, -labels.shape[1]:][valid], (labels[valid] + 1).float())
        return new

    net.teacher_force = spy
    module = SegmentationModule(net, info, SegmentationLoss(info.num_classes, reduction="sum"),
                                optimizer=partial(torch.optim.Adam, lr=1e-3), chunk_size=8)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    train_calls = len(calls)
    assert train_calls > 0 and all(calls)
    result = evaluate(trainer, module, dm, None)
    assert len(calls) == train_calls  # evaluation feeds back the model's own predictions
    assert result.scores is not None and 0 <= result.scores["acc"] <= 100


@pytest.mark.slow
def test_end_to_end_cli_run_on_synthetic_videos(tmp_path, synth_video_root):
    tiny_model = ["-o", "model.num_layers=3", "-o", "model.num_maps=8", "-o", "model.text_width=16",
                  "-o", "model.text_layers=1", "-o", "model.text_heads=2", "-o", "model.feedback_delay=8"]
    out = streamseg("train", "-D", "synth", "-M", "transeger", "-E", "chunk32", "-R", str(tmp_path),
                    "-o", f"data.root={synth_video_root}", *TINY_STREAM, *tiny_model)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "synth" / "transeger_chunk32" / "version_0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_videos"] == len((synth_video_root / "splits" / "test.split1.bundle").read_text().split())
    from streamseg.engine.runner import load_trained

    _, _, dm, module = load_trained(run)
    assert module.net.text.tokenizer.class_names == dm.info.class_names  # the runner passed the names
    # a chunk longer than the feedback delay is refused before training
    bad = streamseg("train", "-D", "synth", "-M", "transeger", "-E", "chunk32", "-R", str(tmp_path / "bad"),
                    "-o", f"data.root={synth_video_root}", *TINY_STREAM, *tiny_model, "-o", "model.feedback_delay=4")
    assert bad.returncode != 0 and "train.chunk_size=8 must be between 1 and model.feedback_delay=4" in bad.stderr
