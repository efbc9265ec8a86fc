"""Telegram reports (issue 7): text splitting, credentials, the background sender against a fake Bot API
server on 127.0.0.1 (ok, down, hung, 429, HTML rejected, token rejected), and short synthetic training
runs that report start, progress with plots, crashes and the final summary, never leaking the token."""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl

from streamseg.integrations.telegram_text import html_to_text, redact, split_message, utf16_len

from ..conftest import TINY
from .fake_telegram import FakeTelegram, closed_port_url

TOKEN = "123456789:AAH-fake-SECRET-token_0123456789abcdefg"  # shaped like a real one: <bot id>:<35 chars>
SECRET = TOKEN.split(":", 1)[1]
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # any bytes: the fake server does not decode images

# ----------------------------------------------------------------------------------------------------
# text


def _balanced(chunk: str) -> bool:
    return all(chunk.count(f"<{t}>") == chunk.count(f"</{t}>") for t in ("b", "pre", "i"))


def test_split_keeps_each_message_under_the_limit_and_valid_html():
    # a <pre> block spanning several messages, entities, and emoji (2 UTF-16 units each)
    body = "\n".join(f"line {i} a &lt; b &amp; c \U0001F600" for i in range(600))
    text = f"<b>head</b>\n<pre>{body}</pre>\ntail"
    chunks = split_message(text, html_mode=True)
    assert len(chunks) > 2
    for c in chunks:
        assert utf16_len(c) <= 4096
        assert _balanced(c), c[:80]
        assert not c.rstrip().endswith("&") and "&am\n" not in c  # no entity cut in half
    assert "".join(html_to_text(c) for c in chunks) == html_to_text(text)
    # the cut falls between lines: every message but the last ends its <pre> right after a newline
    assert all(c.endswith("\n</pre>") for c in chunks[:-1] if "</pre>" in c)


def test_split_cuts_a_line_longer_than_a_message():
    text = "x" * 5000 + "\nshort"
    chunks = split_message(text)
    assert chunks == ["x" * 4096, "x" * 904 + "\nshort"]
    # an HTML line too long for one message is cut inside text only, and its tags are reopened
    long_bold = "<b>" + "y" * 5000 + "</b>"
    parts = split_message(long_bold, html_mode=True)
    assert len(parts) == 2 and all(p.startswith("<b>") and p.endswith("</b>") for p in parts)
    assert "".join(html_to_text(p) for p in parts) == "y" * 5000


def test_redact_hides_the_token_and_its_secret_part():
    url_quoted = TOKEN.replace(":", "%3A")
    text = f"POST /bot{TOKEN}/sendMessage; {url_quoted}; only the secret {SECRET}; the id 123456789 stays"
    clean = redact(text, TOKEN)
    assert SECRET not in clean and "123456789 stays" in clean


def test_metrics_table_picks_max_scores_and_min_losses():
    from streamseg.integrations.telegram_report import fmt_duration, metrics_table

    history = {1: {"val/acc": 50.0, "train/loss": 2.0}, 2: {"val/acc": 70.0, "train/loss": 1.0},
               3: {"val/acc": 60.0, "train/loss": 1.5}}
    rows = {line.split()[0]: line.split()[1:] for line in html_to_text(metrics_table(history)).splitlines()}
    assert rows["val/acc"] == ["70.00", "(2)", "60.00", "(3)"]  # best is the highest score
    assert rows["train/loss"] == ["1", "(2)", "1.5", "(3)"]  # best is the lowest loss
    assert [fmt_duration(s) for s in (5.04, 245, 7620, 97200)] == ["5.0 s", "4 m 05 s", "2 h 07 m", "1 d 03 h"]


# ----------------------------------------------------------------------------------------------------
# credentials and the CLI entry point


def _key_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "key.ini"
    path.write_text(body)
    return path


def test_credentials_from_key_file_then_environment(tmp_path):
    from streamseg.integrations.telegram import CredentialsError, load_credentials

    key = _key_file(tmp_path, f"[Telegram0]\ntoken = {TOKEN}\nchat_id = 42\n\n"
                              "[Telegram1]\ntoken = 1:x%y\nchat_id = -100\napi_url = http://h:8081\n")
    c0 = load_credentials(0, key, environ={})
    assert (c0.token, c0.chat_id, c0.api_url) == (TOKEN, "42", None)
    assert TOKEN not in repr(c0) and SECRET not in repr(c0)
    c1 = load_credentials(1, key, environ={})
    assert (c1.token, c1.api_url) == ("1:x%y", "http://h:8081")  # no '%' interpolation
    assert load_credentials(1, key, api_url="http://cli:1", environ={}).api_url == "http://cli:1"
    # no such section: the environment is the fallback
    env = {"STREAMSEG_TELEGRAM_TOKEN": TOKEN, "STREAMSEG_TELEGRAM_CHAT_ID": "7",
           "STREAMSEG_TELEGRAM_API_URL": "http://env:2"}
    c2 = load_credentials(2, key, environ=env)
    assert (c2.chat_id, c2.api_url, c2.source) == ("7", "http://env:2", "environment")
    assert load_credentials(2, key, environ={}) is None
    with pytest.raises(CredentialsError, match="STREAMSEG_TELEGRAM_CHAT_ID"):
        load_credentials(2, key, environ={"STREAMSEG_TELEGRAM_TOKEN": TOKEN})


def test_credential_errors_name_the_place_but_never_the_token(tmp_path):
    from streamseg.integrations.telegram import CredentialsError, load_credentials

    no_chat = _key_file(tmp_path, f"[Telegram0]\ntoken = {TOKEN}\n")
    with pytest.raises(CredentialsError) as e:
        load_credentials(0, no_chat, environ={})
    assert "[Telegram0]" in str(e.value) and "chat_id" in str(e.value) and SECRET not in str(e.value)
    # a token line before any section header: configparser's own message quotes the line
    broken = _key_file(tmp_path, f"token = {TOKEN}\n[Telegram0]\n")
    with pytest.raises(CredentialsError) as e:
        load_credentials(0, broken, environ={})
    assert "line" in str(e.value) and str(broken) in str(e.value) and SECRET not in str(e.value)


def test_cli_entry_point_warns_once_when_credentials_are_missing(tmp_path, monkeypatch, caplog):
    pytest.importorskip("telegram")
    from streamseg.integrations.telegram import telegram_callback_from_cli
    from streamseg.integrations.telegram_callback import TelegramCallback

    for var in ("STREAMSEG_TELEGRAM_TOKEN", "STREAMSEG_TELEGRAM_CHAT_ID", "STREAMSEG_TELEGRAM_API_URL"):
        monkeypatch.delenv(var, raising=False)
    assert telegram_callback_from_cli(None, tmp_path / "none.ini") is None  # not asked for: silent
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="streamseg.telegram"):
        assert telegram_callback_from_cli(3, tmp_path / "none.ini") is None
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "[Telegram3]" in warnings[0].getMessage()
    assert "training goes on" in warnings[0].getMessage()

    key = _key_file(tmp_path, f"[Telegram3]\ntoken = {TOKEN}\nchat_id = 5\n")
    cb = telegram_callback_from_cli(3, key, api_url="http://127.0.0.1:9", every_n_epochs=4)
    assert isinstance(cb, TelegramCallback) and cb.every_n_epochs == 4
    assert cb.notifier._creds.api_url == "http://127.0.0.1:9"


def test_missing_library_is_one_warning_naming_the_extra(tmp_path, monkeypatch, caplog):
    import importlib.util

    from streamseg.integrations import telegram as tg

    key = _key_file(tmp_path, f"[Telegram0]\ntoken = {TOKEN}\nchat_id = 5\n")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "telegram" else real(name, *a))
    with caplog.at_level(logging.WARNING, logger="streamseg.telegram"):
        assert tg.telegram_callback_from_cli(0, key) is None
    assert len(caplog.records) == 1 and "streamseg[telegram]" in caplog.records[0].getMessage()


# ----------------------------------------------------------------------------------------------------
# the background sender


def _notifier(url: str, **kw):
    pytest.importorskip("telegram")
    from streamseg.integrations.telegram_sender import TelegramCredentials, TelegramNotifier

    opts = dict(connect_timeout=1.0, read_timeout=1.0, media_timeout=1.0, backoff=0.05, max_attempts=2)
    return TelegramNotifier(TelegramCredentials(TOKEN, "5", url, source="test"), **(opts | kw))


def _telegram_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "streamseg-telegram" and t.is_alive()]


def test_sender_delivers_html_photos_and_long_messages():
    with FakeTelegram("ok") as srv:
        n = _notifier(srv.url)
        assert n.send("<b>bold</b> a &lt; b")
        assert n.photo(PNG, caption="curves", filename="curves.png")
        assert n.photo(lambda: PNG, caption="rendered in the worker")
        long_text = "\n".join(f"row {i:05d} " + "z" * 80 for i in range(100))  # ~9,000 characters
        assert n.send(long_text, html=False)
        n.close(10)
        assert not _telegram_threads()
    msgs = srv.delivered("sendMessage")
    assert msgs[0].fields["text"] == "<b>bold</b> a &lt; b" and msgs[0].fields["parse_mode"] == "HTML"
    assert all(m.token == TOKEN and m.fields["chat_id"] == "5" for m in msgs)
    assert len(msgs) == 1 + 3 and "".join(m.fields["text"] for m in msgs[1:]) == long_text
    photos = srv.delivered("sendPhoto")
    assert [p.photo for p in photos] == [PNG, PNG]
    assert [p.fields["caption"] for p in photos] == ["curves", "rendered in the worker"]
    assert n.stats == {"sent": 4, "failed": 0, "dropped": 0}


def test_sender_waits_the_retry_after_telegram_asks_for():
    with FakeTelegram("429", retry_after=1, fail_first=1) as srv:
        n = _notifier(srv.url, max_attempts=3)
        n.send("hello")
        n.close(10)
    sends = [c for c in srv.calls if c.method == "sendMessage"]
    assert [c.answered for c in sends] == [429, 200]
    assert sends[1].at - sends[0].at >= 1.0  # retried after retry_after, not at once
    assert srv.texts() == ["hello"]


def test_sender_falls_back_to_plain_text_when_html_is_rejected():
    with FakeTelegram("html400") as srv:
        n = _notifier(srv.url)
        n.send("<b>epoch 3</b>: a &lt; b &amp; c")
        n.close(10)
    assert [c.answered for c in srv.calls if c.method == "sendMessage"] == [400, 200]
    plain = srv.delivered("sendMessage")[0]
    assert plain.fields["text"] == "epoch 3: a < b & c" and "parse_mode" not in plain.fields


def test_sender_never_blocks_when_telegram_hangs():
    with FakeTelegram("slow") as srv:
        n = _notifier(srv.url, max_queue=10)
        results = [n.send(f"m{i}") for i in range(50)]  # the worker is stuck: the queue fills up
        assert results[:10] == [True] * 10 and not all(results)  # full queue: dropped, not blocking
        n.close(0.5)  # gives up on the hung request instead of waiting for it
        assert not _telegram_threads()
        assert n.stats["dropped"] >= 40


def test_sender_survives_telegram_being_down(caplog):
    n = _notifier(closed_port_url())
    with caplog.at_level(logging.WARNING, logger="streamseg.telegram"):
        assert n.send("anyone there?")
        n.close(5)
    assert not _telegram_threads()
    assert n.stats["sent"] == 0 and n.stats["failed"] + n.stats["dropped"] == 1
    assert caplog.records and all(SECRET not in r.getMessage() for r in caplog.records)


def test_rejected_token_disables_reports_with_one_warning(caplog):
    with FakeTelegram("401") as srv, caplog.at_level(logging.WARNING, logger="streamseg.telegram"):
        n = _notifier(srv.url)
        n.send("first")
        n.close(5)
        assert not n.send("later")  # disabled: dropped at once
    assert [c.method for c in srv.calls] == ["getMe"]
    rejected = [r.getMessage() for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1 and SECRET not in rejected[0]


def test_search_progress_message():
    with FakeTelegram("ok") as srv:
        n = _notifier(srv.url)
        n.search_progress("mstcn_lr", 20, 100, "f1@50", 61.234, 17, {"train.lr": 0.002, "model.num_maps": 32})
        n.search_progress("mstcn_lr", 0, None, "f1@50", None, None, {})
        n.close(10)
    first, second = srv.texts()
    assert "trials: 20/100" in first and "61.23" in first and "trial 17" in first
    assert "-o train.lr=0.002" in first and "-o model.num_maps=32" in first
    assert "no completed trial yet" in second


# ----------------------------------------------------------------------------------------------------
# training runs (in-process, tiny synthetic data)


@pytest.fixture
def debug_log(tmp_path):
    """Every logger at DEBUG into a file, as a user chasing a problem might run: the token must not show."""
    path = tmp_path / "debug.log"
    handler = logging.FileHandler(path)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield path
    root.removeHandler(handler)
    root.setLevel(old)
    handler.close()


def _train(tmp_path: Path, synth_root: Path, callbacks: list, *overrides: str):
    from streamseg.config import load_configs, resolve_params
    from streamseg.engine.runner import Hardware, train_and_test

    tiny = [TINY[i + 1] for i in range(0, len(TINY), 2)]
    configs = load_configs("synth", "mstcn", "quick")
    params, applied = resolve_params(configs, [*tiny, f"data.root={synth_root}", *overrides])
    return train_and_test(configs, params, applied, tmp_path / "exp", Hardware(), new=True,
                          extra_callbacks=callbacks)


def _callback(url: str, every: int = 1, **kw):
    from streamseg.integrations.telegram_callback import TelegramCallback

    return TelegramCallback(_notifier(url, **kw), every_n_epochs=every, flush_timeout=5.0)


def _assert_token_nowhere(*places: Path | str) -> None:
    for place in places:
        if isinstance(place, Path):
            files = [place] if place.is_file() else [p for p in place.rglob("*") if p.is_file()]
            for f in files:
                data = f.read_bytes()
                assert SECRET.encode() not in data, f"token found in {f}"
        else:
            assert SECRET not in place, "token found in captured output"


def test_training_run_reports_start_progress_plots_and_summary(tmp_path, synth_root, capfd, debug_log):
    with FakeTelegram("ok") as srv:
        run, metrics = _train(tmp_path, synth_root, [_callback(srv.url, every=1)])
        assert not _telegram_threads()  # flushed and stopped after testing
    texts = srv.texts()
    assert len(texts) == 4, texts  # start, epoch 1, epoch 2, finished
    start, ep1, ep2, end = texts
    assert start.startswith("<b>started</b> synth/mstcn_quick/version_0") and "fresh start" in start
    assert "model.num_maps=8" in start  # the config summary shows the overrides
    assert "<b>epoch 1/2</b>" in ep1 and "<b>epoch 2/2</b>" in ep2
    for key in ("val/acc", "val/edit", "val/f1@50", "train/loss"):
        assert key in ep2
    assert "per epoch, ETA" in ep2
    assert end.startswith("<b>finished</b>") and "F1@50" in end and f"{metrics['f1@50']:.2f}" in end
    assert "best.ckpt" in end
    photos = srv.delivered("sendPhoto")
    captions = [p.fields["caption"] for p in photos]
    assert captions.count("training curves, epoch 2") == 1
    assert any(c.startswith("validation video") for c in captions)
    assert all(p.photo.startswith(b"\x89PNG") for p in photos)  # real PNGs rendered by matplotlib
    out = capfd.readouterr()
    _assert_token_nowhere(run.path, debug_log, out.out, out.err)
    assert "bot<redacted>/sendPhoto" in debug_log.read_text()  # httpx did log the request URLs, redacted


class _Crash(pl.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("synthetic failure in epoch 2")


def test_crash_sends_the_traceback(tmp_path, synth_root, capfd):
    with FakeTelegram("ok") as srv:
        with pytest.raises(RuntimeError, match="synthetic failure"):  # training's own error, unchanged
            _train(tmp_path, synth_root, [_callback(srv.url, every=5), _Crash()])
        assert not _telegram_threads()
    crash = srv.texts()[-1]
    assert crash.startswith("<b>crashed</b>") and "in epoch 2" in crash
    assert "<b>RuntimeError</b>: synthetic failure in epoch 2" in crash
    assert "on_train_epoch_end" in crash and "raise RuntimeError" in crash  # the traceback's last frame
    assert "last metrics: " in crash and "val/acc" in crash
    out = capfd.readouterr()
    _assert_token_nowhere(tmp_path / "exp", out.out, out.err)


@pytest.mark.timeout(180)  # the bound: a few tiny epochs take seconds; a blocked sender would hang forever
def test_misbehaving_telegrams_never_stop_training(tmp_path, synth_root, capfd):
    # one run reporting to four bad servers at once: down (refused), slow (hangs every request), 429 (throttles
    # the first two sends), html400 (rejects HTML). Bounded: the run must finish while they misbehave; a
    # sender that blocked the training thread would hang here until pytest-timeout fails the test.
    with contextlib.ExitStack() as stack:
        servers = {mode: stack.enter_context(FakeTelegram(mode, retry_after=1, fail_first=2))
                   for mode in ("slow", "429", "html400")}
        callbacks = [_callback(closed_port_url(), every=1, max_attempts=3)]
        # 4 tries: the two throttled ones, the one that gets through, and one spare for a transient error of a
        # loaded machine (with 3, a single extra failure dropped "started" once in a full-suite run)
        callbacks += [_callback(srv.url, every=1, max_attempts=4) for srv in servers.values()]
        callbacks[1].flush_timeout = 1.0  # slow: give up on the hung request soon
        run, metrics = _train(tmp_path, synth_root, callbacks, "train.epochs=1")
        assert (run.path / "DONE").is_file() and "f1@50" in metrics
        assert not _telegram_threads()  # every sender stopped within its flush timeout
    # throttled, the reports still arrive in order; with HTML rejected, they arrive as plain text
    assert [t.split()[0] for t in servers["429"].texts()] == ["<b>started</b>", "<b>epoch", "<b>finished</b>"]
    assert [t.split()[0] for t in servers["html400"].texts()] == ["started", "epoch", "finished"]
    out = capfd.readouterr()
    _assert_token_nowhere(run.path, out.out, out.err)


def test_evaluation_run_reports_what_it_scored(tmp_path, synth_root):
    # `streamseg test`: a Trainer that only tests; the callback says what it evaluates, then the results
    from streamseg.config import load_configs, resolve_params
    from streamseg.engine import dist
    from streamseg.engine.checkpoint_eval import evaluate
    from streamseg.engine.runner import build

    tiny = [TINY[i + 1] for i in range(0, len(TINY), 2)]
    configs = load_configs("synth", "mstcn", "quick")
    params, _ = resolve_params(configs, [*tiny, f"data.root={synth_root}"])
    dm, _, module = build(configs, params, dist.detect_launch())
    with FakeTelegram("ok") as srv:
        trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, default_root_dir=str(tmp_path / "synth" / "m_e" / "version_3"),
                             callbacks=[_callback(srv.url)])
        result = evaluate(trainer, module, dm, None)  # what `streamseg test` runs: the scores come with it
        assert not _telegram_threads()
    start, end = srv.texts()
    assert start.startswith("<b>evaluating</b> synth/m_e/version_3")
    assert end.startswith("<b>evaluated</b>") and f"{result.scores['acc']:.2f}" in end


def test_resumed_run_recovers_earlier_epochs_from_the_csv_log(tmp_path):
    from types import SimpleNamespace

    from pytorch_lightning.loggers import CSVLogger

    from streamseg.integrations.telegram_callback import csv_history

    logger = CSVLogger(str(tmp_path), name="", version="csv")
    Path(logger.log_dir).mkdir(parents=True)
    (Path(logger.log_dir) / "metrics.csv").write_text(
        "epoch,step,train/loss,val/acc\n0,1,2.5,\n0,1,,40.0\n1,3,1.5,\n1,3,,55.0\n")
    history = csv_history(SimpleNamespace(loggers=[logger]))
    assert history == {1: {"train/loss": 2.5, "val/acc": 40.0}, 2: {"train/loss": 1.5, "val/acc": 55.0}}


def test_cli_flag_reports_a_training_run(tmp_path, synth_root):
    """`streamseg train ... -B 0 --telegram-keys FILE`: the CLI wires the callback (a real subprocess)."""
    from ..conftest import streamseg

    with FakeTelegram("ok") as srv:
        keys = _key_file(tmp_path, f"[Telegram0]\ntoken = {TOKEN}\nchat_id = 5\napi_url = {srv.url}\n")
        out = streamseg("train", "-D", "synth", "-M", "mstcn", "-E", "quick", "-R", str(tmp_path / "exp"),
                        "-o", f"data.root={synth_root}", *TINY, "-B", "0", "--telegram-keys", str(keys),
                        "--telegram-every", "1")
        assert out.returncode == 0, out.stderr[-3000:]
        texts = srv.texts()
    assert texts[0].startswith("<b>started</b>") and texts[-1].startswith("<b>finished</b>")
    _assert_token_nowhere(tmp_path / "exp", out.stdout, out.stderr)


# ----------------------------------------------------------------------------------------------------
# input preview (issue 22): what the model gets, at the start of training


def test_input_preview_is_a_gif_of_the_chunks_with_their_label_colours():
    from io import BytesIO

    from PIL import Image

    from streamseg.integrations.telegram_report import PREVIEW_TEXT, render_input_preview
    from streamseg.viz.plots import class_colours

    t, side = 3, 16  # 3 sampled frames of 16x16, scaled 8x to 128 pixels
    frames = np.zeros((2, t, side, side, 3), np.uint8)
    frames[0, :, :, :, 0] = 255  # chunk 0 red, chunk 1 green
    frames[1, :, :, :, 1] = 255
    labels = np.array([[0, 1, 1], [2, 2, -1]])  # the last frame of chunk 1 is padding
    gif = Image.open(BytesIO(render_input_preview(frames, labels, ["bg", "cut", "pour"], bg_ids=[0],
                                                  names=["vid_a", "vid_b"])))
    assert gif.format == "GIF" and gif.n_frames == t and gif.size == (2 * (128 + 4), 128 + 2 * PREVIEW_TEXT)
    colours = (class_colours(3, [0])[:, :3] * 255).round()
    for step in range(t):
        gif.seek(step)
        rgb = np.asarray(gif.convert("RGB")).astype(int)
        assert abs(rgb[64, 64] - [255, 0, 0]).max() <= 8 and abs(rgb[64, 132 + 64] - [0, 255, 0]).max() <= 8
        bar = rgb[128 + PREVIEW_TEXT - 2, 132 + 120]  # chunk 1's label bar, right end (past the text)
        expected = [0, 0, 0] if labels[1, step] < 0 else colours[labels[1, step]]
        assert abs(bar - expected).max() <= 12, (step, bar, expected)


def test_training_on_frames_starts_with_the_input_preview_unless_turned_off(tmp_path, synth_video_root):
    """A tiny run on frames with two callbacks: the default one sends the preview (after the start message,
    before any epoch report) of the first batch's chunks; the one built with preview=False sends none."""
    from io import BytesIO

    from PIL import Image

    from streamseg.config import load_configs, resolve_params
    from streamseg.engine.runner import Hardware, train_and_test
    from streamseg.integrations.telegram_callback import TelegramCallback

    from ..conftest import TINY_STREAM

    with FakeTelegram("ok") as on, FakeTelegram("ok") as off:
        callbacks = [_callback(on.url), TelegramCallback(_notifier(off.url), every_n_epochs=1, flush_timeout=5.0,
                                                         preview=False)]
        configs = load_configs("synth", "mobilenet_framewise", "chunk32")
        tiny = [TINY_STREAM[i + 1] for i in range(0, len(TINY_STREAM), 2)]
        params, applied = resolve_params(configs, [*tiny, f"data.root={synth_video_root}", "train.batch_size=3"])
        train_and_test(configs, params, applied, tmp_path / "exp", Hardware(), new=True, extra_callbacks=callbacks)
    sent = [c.method for c in on.calls if c.method != "getMe"]
    assert sent[:2] == ["sendMessage", "sendAnimation"] and sent.count("sendAnimation") == 1, sent
    preview = on.delivered("sendAnimation")[0]
    assert preview.fields["caption"].startswith("input preview: 3 training chunks of 8 frames (16x16)")
    gif = Image.open(BytesIO(preview.photo))
    assert gif.format == "GIF" and gif.n_frames == 8 and gif.size[0] == 3 * (128 + 4)
    assert not off.delivered("sendAnimation") and off.texts()[0].startswith("<b>started</b>")


def test_cli_flag_turns_the_preview_off(tmp_path):
    pytest.importorskip("telegram")
    from streamseg.cli.main import build_parser
    from streamseg.cli.train import _telegram

    key = _key_file(tmp_path, f"[Telegram0]\ntoken = {TOKEN}\nchat_id = 5\napi_url = http://127.0.0.1:9\n")
    base = ["train", "-D", "synth", "-M", "mstcn", "-E", "quick", "-B", "0", "--telegram-keys", str(key)]
    parser = build_parser()
    assert _telegram(parser.parse_args(base))[0].preview
    assert not _telegram(parser.parse_args([*base, "--no-telegram-preview"]))[0].preview
    with pytest.raises(SystemExit):  # `streamseg test` does not train: no such flag
        parser.parse_args(["test", *base[1:], "--no-telegram-preview"])


def test_preview_undoes_the_normalisation_and_skips_finished_stream_slots():
    """The hook gets the batch after `on_after_batch_transfer` (normalised floats): the GIF shows the uint8
    frames again; a slot whose mask is all zero (its stream has ended) is left out."""
    from io import BytesIO
    from types import SimpleNamespace

    import torch
    from PIL import Image

    from streamseg.data.streams import normalize_frames
    from streamseg.integrations.telegram_callback import TelegramCallback

    sent = []
    notifier = SimpleNamespace(animation=lambda gif, caption, filename: sent.append((gif, caption)))
    cb = TelegramCallback(notifier, preview_chunks=4)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    frames = torch.randint(0, 256, (3, 3, 2, 16, 16), dtype=torch.uint8)
    frames[:, :, :, :8] = torch.tensor([200, 40, 90], dtype=torch.uint8).view(1, 3, 1, 1, 1)  # a flat top half
    mask = torch.ones(3, 1, 2)
    mask[1] = 0  # slot 1: finished
    batch = {"x": normalize_frames(frames.clone(), mean, std), "labels": torch.zeros(3, 2, dtype=torch.long),
             "mask": mask, "names": ["a", "b", "c"]}
    trainer = SimpleNamespace(is_global_zero=True, datamodule=SimpleNamespace(mean=mean, std=std))
    module = SimpleNamespace(info=SimpleNamespace(class_names=["bg", "x"], bg_ids=[0]))
    cb._preview_pending = True
    cb.on_train_batch_start(trainer, module, batch, 0)
    cb.on_train_batch_start(trainer, module, batch, 1)  # once only
    assert len(sent) == 1 and sent[0][1].startswith("input preview: 2 training chunks of 2 frames (16x16)")
    gif = Image.open(BytesIO(sent[0][0]()))
    rgb = np.asarray(gif.convert("RGB")).astype(int)
    assert gif.size[0] == 2 * (128 + 4)
    for tile in (0, 1):  # chunks 0 and 2, the flat top half of their first frame
        assert abs(rgb[20, tile * 132 + 64] - [200, 40, 90]).max() <= 8, rgb[20, tile * 132 + 64]
