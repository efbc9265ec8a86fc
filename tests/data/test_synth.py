"""The synthetic dataset: determinism, grammar, ambiguity that only context resolves, videos, ensure()."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest

from streamseg.data import DataError, TASLayout, check_dataset, synth
from streamseg.data.synth import APPEARANCE_OF, BACKGROUND, RECIPES, SynthSpec
from streamseg.data.synth_render import GLYPHS

SMALL = SynthSpec(num_videos=8, seed=3, with_videos=False)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return synth.generate(tmp_path_factory.mktemp("synth") / "small", SMALL)


def runs(labels: np.ndarray) -> list[tuple[int, int]]:
    """(label, length) of each maximal equal-label run."""
    starts = np.flatnonzero(np.diff(labels, prepend=-1))
    return [(int(labels[s]), int(e - s)) for s, e in zip(starts, [*starts[1:], len(labels)])]


def test_same_spec_gives_byte_identical_files(small: Path, tmp_path: Path) -> None:
    again = synth.generate(tmp_path / "again", SMALL)
    files = sorted(p.relative_to(small) for p in small.rglob("*") if p.is_file())
    assert len(files) == 1 + 1 + 3 + 2 * SMALL.num_videos  # synth.json, mapping, 3 splits, labels + features
    for rel in files:
        assert (again / rel).read_bytes() == (small / rel).read_bytes(), rel
    other = synth.generate(tmp_path / "other", dataclasses.replace(SMALL, seed=4))
    name = TASLayout(small).split_names("train", 1)[0]
    assert (other / "features" / f"{name}.npy").read_bytes() != (small / "features" / f"{name}.npy").read_bytes()


def test_layout_is_standard_and_sound(small: Path) -> None:
    assert check_dataset(small) == []
    layout = TASLayout(small)
    assert layout.classes[0] == BACKGROUND and layout.classes == synth.CLASSES
    assert layout.feature_dim == SMALL.feature_dim
    splits = {s: layout.split_names(s, 1) for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [5, 1, 2]  # 60 / 15 / 25 % of 8, rounded
    assert sorted(sum(splits.values(), [])) == sorted(p.stem for p in (small / "groundTruth").iterdir())


def test_splits_are_60_15_25_and_spread_activities() -> None:
    spec = SynthSpec(num_videos=40)
    names = [f"{list(RECIPES)[i % 4]}_{i:03d}" for i in range(40)]
    splits = synth.split_videos(names, spec)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [24, 6, 10]
    for activity in RECIPES:
        assert sum(n.startswith(activity) for n in splits["train"]) == 6


def test_videos_follow_the_grammar_with_background_between(small: Path) -> None:
    layout = TASLayout(small)
    for path in sorted((small / "groundTruth").iterdir()):
        labels = layout.load_labels(path.stem)
        assert SMALL.min_frames <= len(labels) <= SMALL.max_frames
        assert labels[0] == labels[-1] == 0  # background at both ends
        actions = tuple(synth.CLASSES[c] for c, _ in runs(labels) if c != 0)
        activity = path.stem.rsplit("_", 1)[0]
        assert actions in synth.recipe_variants(RECIPES[activity]), (path.stem, actions)
        assert (np.asarray(layout.load_features(path.stem)).shape == (SMALL.feature_dim, len(labels)))


def test_sampler_produces_every_variant_of_the_grammar() -> None:
    rng = np.random.default_rng(0)
    for activity, recipe in RECIPES.items():
        variants = synth.recipe_variants(recipe)
        assert len(variants) > 1, activity  # every recipe has an optional step or a swap
        assert {tuple(synth.sample_actions(recipe, rng)) for _ in range(300)} == variants


@pytest.mark.parametrize("frames", [(60, 60), (100, 140), (500, 600)])
def test_timeline_fits_the_frame_range(frames: tuple[int, int]) -> None:
    spec = SynthSpec(min_frames=frames[0], max_frames=frames[1])
    rng = np.random.default_rng(1)
    for activity in RECIPES:
        for _ in range(20):
            timeline = synth.sample_timeline(synth.sample_actions(RECIPES[activity], rng), spec, rng)
            assert frames[0] <= sum(n for _, n in timeline) <= frames[1]
            assert all(n >= 1 for _, n in timeline)


def test_ambiguous_pairs_share_prototype_and_drift() -> None:
    prototype, drift = synth.world_parameters(SMALL)
    pairs = [[c for c in APPEARANCE_OF if APPEARANCE_OF[c] == a] for a in synth.APPEARANCES]
    pairs = [p for p in pairs if len(p) > 1]
    assert len(pairs) == 4 and all(len(p) == 2 for p in pairs)
    assert len(synth.APPEARANCES) == len(prototype) == len(drift)
    assert set(synth.APPEARANCES) == set(GLYPHS)  # every appearance is drawn, pairs identically
    assert len({tuple(row) for row in prototype.round(6)}) == len(synth.APPEARANCES)  # appearances all differ


def context_oracle(appearance_runs: list[tuple[str, int]]) -> list[str]:
    """Class of every run from the appearances alone plus the rules the module docstring states."""
    names = [a for a, _ in appearance_runs]
    drink = "take_cup" in names
    cut_lengths = sorted(n for a, n in appearance_runs if a == "cut")
    pours_seen, out = 0, []
    for appearance, n in appearance_runs:
        if appearance == "pour":
            out.append("pour_water" if pours_seen == 0 else "pour_milk")
            pours_seen += 1
        elif appearance == "spoon":
            out.append("add_sugar" if drink else "add_salt")
        elif appearance == "stir":
            out.append("stir_drink" if drink else "whisk_egg")
        elif appearance == "cut":
            out.append("cut_cucumber" if n == cut_lengths[-1] else "cut_tomato")
        else:
            out.append(appearance)  # unambiguous appearances are named like their class
    return out


def test_context_resolves_what_single_frames_cannot() -> None:
    """Frame-wise nearest class mean is near chance on the ambiguous frames; context rules are exact."""
    spec = SynthSpec(num_videos=24, seed=5, with_videos=False)
    latents = [synth.sample_video(i, spec) for i in range(spec.num_videos)]
    features = [synth.make_features(v, spec).T for v in latents]
    train, test = range(16), range(16, 24)
    x = np.concatenate([features[i] for i in train])
    y = np.concatenate([latents[i].labels for i in train])
    means = np.stack([x[y == k].mean(0) for k in range(len(synth.CLASSES))])
    xt = np.concatenate([features[i] for i in test])
    yt = np.concatenate([latents[i].labels for i in test])
    predicted = np.argmin(((xt[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
    ambiguous = np.isin(yt, [synth.CLASSES.index(c) for c in APPEARANCE_OF
                             if list(APPEARANCE_OF.values()).count(APPEARANCE_OF[c]) == 2])
    appearance_of = np.array([synth.APPEARANCES.index(APPEARANCE_OF[c]) for c in synth.CLASSES])
    assert ambiguous.mean() > 0.25
    # The appearance is mostly recognisable from one frame, the class among an ambiguous pair is not.
    assert (appearance_of[predicted] == appearance_of[yt]).mean() > 0.8
    assert (predicted[ambiguous] == yt[ambiguous]).mean() < 0.65
    assert (predicted == yt).mean() < 0.8

    # Within one video (one tempo) the cucumber is always cut for longer than the tomato.
    longest_tomato = synth.MEAN_SECONDS["cut_tomato"] * synth.JITTER_RANGE[1]
    assert longest_tomato < synth.MEAN_SECONDS["cut_cucumber"] * synth.JITTER_RANGE[0]
    for video in latents:
        class_runs = runs(video.labels)
        appearance_runs = [(APPEARANCE_OF[synth.CLASSES[c]], n) for c, n in class_runs]
        assert context_oracle(appearance_runs) == [synth.CLASSES[c] for c, _ in class_runs], video.name


def test_videos_decode_with_one_frame_per_label(tmp_path: Path) -> None:
    spec = SynthSpec(num_videos=3, seed=1, height=32, width=48, min_frames=60, max_frames=90)
    root = synth.generate(tmp_path / "v", spec)
    assert check_dataset(root) == []
    layout = TASLayout(root)
    for name in layout.split_names("train", 1) + layout.split_names("test", 1):
        with av.open(str(layout.video_path(name))) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        labels = layout.load_labels(name)
        assert len(frames) == len(labels)
        assert frames[0].shape == (32, 48, 3)
        # Background frames are flat, action frames show a glyph: the picture carries the latent.
        spread = np.array([f.reshape(-1, 3).std(0).max() for f in frames])
        assert spread[labels == 0].max() < 8 < spread[labels != 0].min()


def test_camera_videos_are_h264_with_the_same_labels_and_a_moving_textured_scene(tmp_path: Path) -> None:
    spec = SynthSpec(num_videos=3, seed=1, height=48, width=64, min_frames=60, max_frames=90, camera=True)
    root = synth.generate(tmp_path / "cam", spec)
    plain = synth.generate(tmp_path / "plain", SynthSpec(num_videos=3, seed=1, min_frames=60, max_frames=90,
                                                          with_videos=False))
    layout = TASLayout(root)
    assert check_dataset(root) == []
    for name in layout.split_names("train", 1):
        labels = layout.load_labels(name)
        assert np.array_equal(labels, TASLayout(plain).load_labels(name))  # the style changes pixels only
        with av.open(str(layout.video_path(name))) as container:
            assert container.streams.video[0].codec_context.name == "h264"
            frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]).astype(float)
        assert frames.shape == (len(labels), 48, 64, 3)
        background = frames[labels == 0]
        assert background.reshape(len(background), -1, 3).std(1).max(1).min() > 8  # textured, never flat
        assert np.abs(np.diff(background, axis=0)).mean() > 2  # camera motion and sensor noise


def test_ensure_generates_once_and_regenerates_on_a_new_spec(tmp_path: Path, capsys) -> None:
    root = tmp_path / "data" / "synth"
    spec = SynthSpec(num_videos=3, with_videos=False)
    synth.ensure(root, spec)
    said = capsys.readouterr().err
    assert "writing the synthetic dataset (3 videos, features only)" in said and str(root.resolve()) in said
    marker = root / "marker"
    marker.write_text("kept while the spec is unchanged")
    assert synth.ensure(root, spec) == root and marker.exists()
    assert capsys.readouterr().err == ""  # reused silently
    synth.ensure(root, dataclasses.replace(spec, seed=1))
    assert not marker.exists()
    assert '"seed": 1' in (root / "synth.json").read_text()
    assert sorted(p.name for p in root.parent.iterdir()) == ["synth"]  # no temporary siblings left


def test_generate_refuses_to_overwrite_foreign_data(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(DataError, match="not a synthetic dataset"):
        synth.ensure(tmp_path / "mine", SynthSpec(num_videos=3, with_videos=False))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"


@pytest.mark.parametrize("changes", [{"num_videos": 2}, {"height": 33}, {"min_frames": 700}, {"min_frames": 30}])
def test_spec_validation(changes: dict) -> None:
    with pytest.raises(ValueError, match="SynthSpec"):
        SynthSpec(**changes)
