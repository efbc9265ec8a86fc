"""The built-in synthetic dataset: kitchen "recipes" with real temporal structure, in the standard layout.

Each video performs one activity (a recipe): an ordered sequence of actions drawn from a small grammar
(optional steps, steps whose actions come in either order), separated by ``background`` gaps, with
durations that vary per video (tempo) and per action. Four pairs of actions share one *appearance*
(identical prototype feature and identical drawing), so a frame on its own cannot tell them apart and
only temporal context can:

========================= ========== ======================================================
pair                      appearance what tells them apart
========================= ========== ======================================================
pour_water / pour_milk    pour       order: the first pour of a drink is water, the second milk
add_sugar / add_salt      spoon      activity: sugar in coffee / tea, salt in omelette / salad
stir_drink / whisk_egg    stir       activity: drinks vs omelette (take_cup / crack_egg earlier)
cut_tomato / cut_cucumber cut        duration: tomato ~3.5 s, cucumber ~8 s, in either order
========================= ========== ======================================================

A frame-wise classifier is therefore at chance on the ambiguous frames (about 40 % of all frames);
a temporal model gets most of them right. Test split of the default spec (10 videos), one run each,
`streamseg train -D synth -M <model> -E quick` on a 2-core CPU (README, "Results"):
frame-wise MLP Acc 70.0 / Edit 5.9 / F1@50 1.2; causal MemoryTCN streamed in 32-frame chunks
86.3 / 43.5 / 50.3; offline MS-TCN 90.6 / 75.3 / 80.3.

Features are ``D = feature_dim`` float32 per frame::

    x_t = prototype[a_t] + (phase_t - 1/2) * drift[a_t] + slow_t + offset + white_t

(a_t the appearance, phase_t the progress through the current action, slow_t an AR(1) noise with a
one-second time constant, offset a per-video constant, white_t i.i.d. noise). Videos are drawn from
the same latent by `streamseg.data.synth_render`. Everything is a deterministic function of
`SynthSpec`: the same spec gives byte-identical label and feature files (and videos, with the same
FFmpeg build).

Use ``ensure(root, SynthSpec(...))``: it generates on first use and regenerates when the spec changed.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from streamseg.data.errors import DataError
from streamseg.data.synth_render import camera_frames, encode_h264, encode_mp4, render_frames

GENERATOR_VERSION = 1
"""Bump when the generated data changes for the same spec, so `ensure` regenerates old copies."""
MANIFEST = "synth.json"


@dataclass(frozen=True)
class Step:
    """One step of a recipe: ``actions`` in this order, or in a random order when ``any_order``;
    the whole step is skipped with probability ``skip_prob``."""

    actions: tuple[str, ...]
    any_order: bool = False
    skip_prob: float = 0.0


RECIPES: dict[str, tuple[Step, ...]] = {
    "coffee": (Step(("take_cup",)), Step(("pour_water",)), Step(("add_sugar",), skip_prob=0.4),
               Step(("pour_milk",)), Step(("stir_drink",))),
    "tea": (Step(("take_cup",)), Step(("pour_water",)), Step(("add_sugar",), skip_prob=0.5),
            Step(("stir_drink",)), Step(("pour_milk",), skip_prob=0.5)),
    "omelette": (Step(("take_bowl",)), Step(("crack_egg",)), Step(("add_salt", "whisk_egg"), any_order=True),
                 Step(("fry",)), Step(("plate",))),
    "salad": (Step(("take_bowl",)), Step(("cut_tomato", "cut_cucumber"), any_order=True),
              Step(("add_salt",), skip_prob=0.3), Step(("mix_salad",)), Step(("plate",))),
}
"""The grammar: activity -> steps. Video i performs activity ``list(RECIPES)[i % 4]``."""

BACKGROUND = "background"

APPEARANCE_OF: dict[str, str] = {
    BACKGROUND: "background",
    "take_cup": "take_cup",
    "take_bowl": "take_bowl",
    "pour_water": "pour",
    "pour_milk": "pour",
    "add_sugar": "spoon",
    "add_salt": "spoon",
    "stir_drink": "stir",
    "whisk_egg": "stir",
    "crack_egg": "crack_egg",
    "cut_tomato": "cut",
    "cut_cucumber": "cut",
    "fry": "fry",
    "plate": "plate",
    "mix_salad": "mix_salad",
}
"""Class -> appearance; classes sharing one are indistinguishable frame by frame. Key order = mapping.txt."""

CLASSES: list[str] = list(APPEARANCE_OF)
APPEARANCES: list[str] = list(dict.fromkeys(APPEARANCE_OF.values()))

MEAN_SECONDS: dict[str, float] = {
    "take_cup": 2.0, "take_bowl": 2.0, "pour_water": 5.0, "pour_milk": 3.0, "add_sugar": 2.5,
    "add_salt": 2.0, "stir_drink": 5.0, "whisk_egg": 6.0, "crack_egg": 3.5, "cut_tomato": 3.5,
    "cut_cucumber": 8.0, "fry": 9.0, "plate": 3.0, "mix_salad": 5.0,
}
"""Mean action durations. A recipe of 4-6 actions (15-26 s) plus background gaps gives videos of
280-600 frames (mean ~410) at 15 fps with the default spec."""
TEMPO_RANGE = (0.8, 1.25)  # per-video speed factor (log-uniform)
JITTER_RANGE = (0.75, 1.3)  # per-action duration factor (uniform)
LEAD_SECONDS = (1.0, 3.0)  # background before the first action (uniform)
TRAIL_SECONDS = (1.0, 3.0)  # background after the last action
GAP_PROB, GAP_SECONDS = 0.75, (0.3, 2.0)  # background between two actions, with this probability

PROTOTYPE_STD = 1.0  # per-dimension std of an appearance prototype: class centres ~sqrt(2 D) apart
DRIFT_STD = 1.0  # within-action drift, (phase - 1/2) * drift: +-0.5 std at the ends of an action
# Noise chosen so that a nearest-class-mean classifier gets the *appearance* of 85-88 % of frames right
# (of ~95 % after a 15-frame moving average), measured on the default spec: like real features, frames
# are informative but not clean.
SLOW_STD = 1.5  # AR(1) noise, one-second time constant: errors come in runs, not a short average's prey
WHITE_STD = 2.0  # i.i.d. noise per frame
OFFSET_STD = 0.5  # per-video constant (camera / person)

SPLIT_FRACTIONS = (0.60, 0.15)  # train, val; test gets the rest (25 %)


@dataclass(frozen=True)
class SynthSpec:
    """What to generate; everything else is derived deterministically from it.

    num_videos: videos in total, activities round-robin (>= 3: train, val and test get one at least).
    seed: master seed. feature_dim: D of ``features/<vid>.npy``. height, width, fps: of
    ``Videos/<vid>.mp4`` (H, W even). min_frames, max_frames: every video's length T is forced into this
    range by rescaling all its durations. with_videos: also render and encode the mp4 files. camera: draw
    the videos camera-like (`streamseg.data.synth_render.camera_frames`: textured scene, panning and shaking
    camera, sensor noise; H.264) instead of glyphs on a flat backdrop (MPEG-4 Part 2); same labels, same
    features, e.g. at 320x240 or 1280x720 to measure real decoding cost.
    """

    num_videos: int = 40
    seed: int = 0
    feature_dim: int = 64
    height: int = 64
    width: int = 64
    fps: int = 15
    min_frames: int = 200
    max_frames: int = 600
    with_videos: bool = True
    camera: bool = False

    def __post_init__(self) -> None:
        if self.num_videos < 3:
            raise ValueError(f"SynthSpec.num_videos must be >= 3 (train, val, test), got {self.num_videos}")
        if self.height % 2 or self.width % 2 or self.height < 16 or self.width < 16:
            raise ValueError(f"SynthSpec.height/width must be even and >= 16, got {self.height}x{self.width}")
        # >= 60: room for the longest timeline's 13 runs (lead, 6 actions, 5 gaps, trail) of >= 2 frames.
        if not 60 <= self.min_frames <= self.max_frames:
            raise ValueError(f"SynthSpec needs 60 <= min_frames <= max_frames, got {self.min_frames}, "
                             f"{self.max_frames}")
        if self.feature_dim < 1 or self.fps < 1:
            raise ValueError(f"SynthSpec.feature_dim and fps must be >= 1, got {self.feature_dim}, {self.fps}")


# ---------------------------------------------------------------------------------------------- grammar


def sample_actions(recipe: Sequence[Step], rng: np.random.Generator) -> list[str]:
    """One action sequence of a recipe (no background)."""
    actions: list[str] = []
    for step in recipe:
        skip = rng.random() < step.skip_prob
        order = rng.permutation(len(step.actions)) if step.any_order else range(len(step.actions))
        if not skip:
            actions += [step.actions[i] for i in order]
    return actions


def recipe_variants(recipe: Sequence[Step]) -> set[tuple[str, ...]]:
    """Every action sequence a recipe allows (enumerated, independently of `sample_actions`)."""
    variants: set[tuple[str, ...]] = {()}
    for step in recipe:
        options = set(itertools.permutations(step.actions)) if step.any_order else {step.actions}
        if step.skip_prob > 0:
            options.add(())
        variants = {v + o for v in variants for o in options}
    return variants


def sample_timeline(actions: Sequence[str], spec: SynthSpec, rng: np.random.Generator) -> list[tuple[str, int]]:
    """(class, frames) runs: background lead, actions with optional background gaps, background trail.

    Durations: ``MEAN_SECONDS * tempo * jitter * fps``; when the total falls outside
    [min_frames, max_frames] every run is scaled by the same factor, so relative durations (the
    tomato / cucumber cue) survive.
    """
    tempo = float(np.exp(rng.uniform(np.log(TEMPO_RANGE[0]), np.log(TEMPO_RANGE[1]))))
    runs: list[tuple[str, float]] = [(BACKGROUND, rng.uniform(*LEAD_SECONDS))]
    for i, action in enumerate(actions):
        if i > 0 and rng.random() < GAP_PROB:
            runs.append((BACKGROUND, rng.uniform(*GAP_SECONDS)))
        runs.append((action, MEAN_SECONDS[action] * tempo * rng.uniform(*JITTER_RANGE)))
    runs.append((BACKGROUND, rng.uniform(*TRAIL_SECONDS)))

    total = sum(seconds for _, seconds in runs) * spec.fps
    scale = spec.fps * float(np.clip(total, spec.min_frames, spec.max_frames)) / total
    frames = [max(2, round(seconds * scale)) for _, seconds in runs]
    # Rounding can leave the total a few frames outside the range: take them from the longest runs,
    # or add them to the trailing background.
    excess = sum(frames) - int(np.clip(sum(frames), spec.min_frames, spec.max_frames))
    while excess > 0:
        longest = int(np.argmax(frames))
        cut = min(excess, frames[longest] - 2)
        frames[longest] -= cut
        excess -= cut
    frames[-1] -= excess
    return [(name, n) for (name, _), n in zip(runs, frames)]


# ---------------------------------------------------------------------------------------------- latent


@dataclass
class VideoLatent:
    """Everything video ``index`` of a spec is made of.

    labels, appearance: int (T,) class and appearance indices; phase: float (T,) progress through the
    current run, in [0, 1); slow: float (T, D) AR(1) noise; offset: float (D,) per-video constant.
    """

    index: int
    name: str
    activity: str
    labels: np.ndarray
    appearance: np.ndarray
    phase: np.ndarray
    slow: np.ndarray
    offset: np.ndarray


def world_parameters(spec: SynthSpec) -> tuple[np.ndarray, np.ndarray]:
    """(prototype, drift), each float (num appearances, D), shared by all videos of a seed."""
    rng = np.random.default_rng([spec.seed, 0])
    shape = (len(APPEARANCES), spec.feature_dim)
    return rng.normal(0.0, PROTOTYPE_STD, shape), rng.normal(0.0, DRIFT_STD, shape)


def sample_video(index: int, spec: SynthSpec) -> VideoLatent:
    """The latent of video ``index``; its own random stream, so it does not depend on num_videos."""
    rng = np.random.default_rng([spec.seed, 1, index])
    activity = list(RECIPES)[index % len(RECIPES)]
    runs = sample_timeline(sample_actions(RECIPES[activity], rng), spec, rng)
    class_index = {name: i for i, name in enumerate(CLASSES)}
    appearance_index = {name: i for i, name in enumerate(APPEARANCES)}
    lengths = np.array([n for _, n in runs])
    labels = np.repeat([class_index[name] for name, _ in runs], lengths)
    appearance = np.repeat([appearance_index[APPEARANCE_OF[name]] for name, _ in runs], lengths)
    # Progress through each run, centred in each frame: (t + 1/2) / n for t = 0..n-1.
    phase = np.concatenate([(np.arange(n) + 0.5) / n for n in lengths])

    num_frames = int(lengths.sum())
    rho = np.exp(-1.0 / spec.fps)  # one-second time constant
    innovations = rng.normal(0.0, SLOW_STD * np.sqrt(1 - rho**2), (num_frames, spec.feature_dim))
    slow = np.empty_like(innovations)
    slow[0] = rng.normal(0.0, SLOW_STD, spec.feature_dim)  # start in the stationary distribution
    for t in range(1, num_frames):
        slow[t] = rho * slow[t - 1] + innovations[t]
    offset = rng.normal(0.0, OFFSET_STD, spec.feature_dim)
    return VideoLatent(index, f"{activity}_{index:03d}", activity, labels, appearance, phase, slow, offset)


def make_features(latent: VideoLatent, spec: SynthSpec) -> np.ndarray:
    """float32 (D, T) features of a video (the white noise has its own stream, so the latent alone
    fixes the video frames and the features add only i.i.d. noise on top)."""
    prototype, drift = world_parameters(spec)
    rng = np.random.default_rng([spec.seed, 2, latent.index])
    white = rng.normal(0.0, WHITE_STD, latent.slow.shape)
    x = (prototype[latent.appearance] + (latent.phase - 0.5)[:, None] * drift[latent.appearance]
         + latent.slow + latent.offset + white)
    return np.ascontiguousarray(x.T, dtype=np.float32)


def make_frames(latent: VideoLatent, spec: SynthSpec) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB frames of a video."""
    # Backdrop: a grey shifted per video by its offset, like a different kitchen / camera.
    backdrop = tuple(int(v) for v in 70 + 25 * np.tanh(latent.offset[:3] / OFFSET_STD))
    jitter = latent.slow[:, :3] / SLOW_STD
    return render_frames(latent.appearance, latent.phase, jitter, APPEARANCES, backdrop, spec.height, spec.width)


def write_video(path: Path, latent: VideoLatent, spec: SynthSpec) -> None:
    """Render and encode one video of the spec."""
    if not spec.camera:
        encode_mp4(path, make_frames(latent, spec), spec.fps)
        return
    rng = np.random.default_rng([spec.seed, 4, latent.index])
    jitter = latent.slow[:, :3] / SLOW_STD
    chunks = camera_frames(latent.appearance, latent.phase, jitter, APPEARANCES, spec.height, spec.width, rng)
    encode_h264(path, chunks, spec.height, spec.width, spec.fps)


def _write_video_job(out: Path, index: int, spec: SynthSpec) -> None:
    latent = sample_video(index, spec)
    write_video(out / "Videos" / f"{latent.name}.mp4", latent, spec)


def split_videos(names: Sequence[str], spec: SynthSpec) -> dict[str, list[str]]:
    """train / val / test names, 60 / 15 / 25 % with each activity spread evenly over the three."""
    rng = np.random.default_rng([spec.seed, 3])
    by_activity = [[n for n in names if n.startswith(a + "_")] for a in RECIPES]
    shuffled = [[group[i] for i in rng.permutation(len(group))] for group in by_activity]
    # Round-robin over activities so that any prefix holds them in equal measure.
    order = [n for batch in itertools.zip_longest(*shuffled) for n in batch if n is not None]
    num_train = max(1, round(SPLIT_FRACTIONS[0] * len(order)))
    num_val = max(1, round(SPLIT_FRACTIONS[1] * len(order)))
    num_train = min(num_train, len(order) - num_val - 1)  # leave one video for test
    return {"train": order[:num_train], "val": order[num_train:num_train + num_val],
            "test": order[num_train + num_val:]}


# ---------------------------------------------------------------------------------------------- files


def _manifest(spec: SynthSpec) -> dict:
    return {"generator": "streamseg.data.synth", "version": GENERATOR_VERSION, "spec": asdict(spec)}


def _read_manifest(root: Path) -> dict | None:
    try:
        manifest = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _write_dataset(out: Path, spec: SynthSpec, jobs: int = 1) -> None:
    for sub in ("features", "groundTruth", "splits") + (("Videos",) if spec.with_videos else ()):
        (out / sub).mkdir(parents=True)
    (out / "mapping.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(CLASSES)), encoding="utf-8")
    names, activities = [], {}
    for index in range(spec.num_videos):
        latent = sample_video(index, spec)
        names.append(latent.name)
        activities[latent.name] = latent.activity
        labels_text = "".join(CLASSES[c] + "\n" for c in latent.labels)
        (out / "groundTruth" / f"{latent.name}.txt").write_text(labels_text, encoding="utf-8")
        np.save(out / "features" / f"{latent.name}.npy", make_features(latent, spec))
        if spec.with_videos and jobs <= 1:
            write_video(out / "Videos" / f"{latent.name}.mp4", latent, spec)
    if spec.with_videos and jobs > 1:  # video i depends on (spec, i) only: the same files in any order
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a forked child of a process that has used torch's thread pools can deadlock
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_write_video_job, [out] * spec.num_videos, range(spec.num_videos),
                          [spec] * spec.num_videos))
    for split, members in split_videos(names, spec).items():
        (out / "splits" / f"{split}.split1.bundle").write_text("".join(f"{n}.txt\n" for n in members),
                                                                encoding="utf-8")
    # Written last: a directory with a manifest is complete.
    manifest = _manifest(spec) | {"activities": activities}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _matches(root: Path, spec: SynthSpec) -> bool:
    manifest = _read_manifest(root)
    return manifest is not None and all(manifest.get(k) == v for k, v in _manifest(spec).items())


def _generate(root: Path, spec: SynthSpec, keep_matching: bool, jobs: int = 1) -> Path:
    if root.exists() and not (root / MANIFEST).is_file() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(root, f"exists and is not a synthetic dataset (no {MANIFEST}); refusing to overwrite it")
    root.parent.mkdir(parents=True, exist_ok=True)
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    tmp = root.parent / f".{root.name}.tmp-{token}"
    try:
        _write_dataset(tmp, spec, jobs)
        if keep_matching and _matches(root, spec):  # another process finished first
            return root
        old = root.parent / f".{root.name}.old-{token}"
        if root.exists():
            os.rename(root, old)
        try:
            os.rename(tmp, root)  # atomic on one filesystem; fails if root reappeared meanwhile
        except OSError:
            if keep_matching and _matches(root, spec):
                return root
            raise
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def generate(root: str | Path, spec: SynthSpec = SynthSpec(), jobs: int = 1) -> Path:
    """(Re)generate the dataset at ``root``; returns ``root``.

    Writes into a temporary sibling directory and renames it into place at the end, so ``root`` is
    never half-written. Refuses (`DataError`) to replace a non-empty directory that has no
    ``synth.json`` manifest, i.e. that this module did not make. ``jobs`` > 1 renders videos in that many
    processes (the files are the same).
    """
    return _generate(Path(root), spec, keep_matching=False, jobs=jobs)


def ensure(root: str | Path, spec: SynthSpec = SynthSpec(), jobs: int = 1) -> Path:
    """Return ``root``, generating the dataset first if it is missing or was made from another spec
    (or generator version). Safe to call from several processes at once."""
    root = Path(root)
    if _matches(root, spec):
        return root
    # Generation takes seconds to tens of seconds (videos are encoded): say what happens and where,
    # on stderr so that stdout stays the command's own output.
    what = f"{spec.num_videos} videos" + (" with mp4 files" if spec.with_videos else ", features only")
    print(f"streamseg: writing the synthetic dataset ({what}) to {root.resolve()} (once; reused afterwards)",
          file=sys.stderr, flush=True)
    return _generate(root, spec, keep_matching=True, jobs=jobs)
