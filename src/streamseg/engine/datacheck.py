"""The dataset check that gates training: `streamseg.data.check` plus what streaming from video needs.

A run on a broken dataset must not die on the first bad file an hour in. `runner.build` calls
`require_sound_data` after the data is prepared and before any model is built: every problem is reported
at once, in the format of `streamseg data check`, and nothing is trained.

* `data.input="features"`: exactly `check_dataset(root, splits=[split])`, i.e. the same report as
  `streamseg data check ROOT --split k` (labels, mapping, features, lengths, and videos when `Videos/`
  exists).
* `data.input="video"`: features are not read, so problems with `features/` are left out; instead every
  listed video must exist and decode, and its header must promise at least one frame per label
  (the stream reader stops a video after its labels and fails on a video shorter than them).
"""

from __future__ import annotations

from pathlib import Path

from ..data.check import Problem, check_dataset, format_problems
from ..data.errors import DataError
from ..data.layout import SPLITS, TASLayout
from ..data.video import probe


class DatasetProblems(DataError):
    """The dataset has problems; the message lists all of them (`format_problems`)."""

    def __init__(self, root: str | Path, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(root, format_problems(self.problems)
                         + "\n(run `streamseg data check` on the folder for the same report)")


def run_data_problems(root: str | Path, split: int, video_input: bool,
                      features_dir: str = "features") -> list[Problem]:
    """Every problem that would stop (or silently spoil) a run on split `split` of `root`."""
    root = Path(root)
    problems = check_dataset(root, splits=[split], features_dir=features_dir)
    if not video_input:
        return problems
    features = str(root / features_dir)
    problems = [p for p in problems if not (p.path == features or p.path.startswith(features + "/"))]
    if not (root / "Videos").is_dir():
        return problems + [Problem(str(root / "Videos"), None,
                                   "missing; data.input='video' needs Videos/<name>.mp4 for every listed video")]
    return problems + _video_length_problems(root, split, {p.path for p in problems})


def _video_length_problems(root: Path, split: int, already: set[str]) -> list[Problem]:
    """Videos whose header frame count is below their label count (checked where nothing else failed)."""
    try:
        layout = TASLayout(root)
        names = {n for s in SPLITS for n in layout.split_names(s, split)}
    except DataError:  # the mapping or a split file is broken: already reported by check_dataset
        return []
    out = []
    for name in sorted(names):
        video, labels = layout.video_path(name), layout.labels_path(name)
        if video is None or str(video) in already or str(labels) in already or not labels.is_file():
            continue
        num_labels = sum(1 for line in labels.read_text(errors="replace").splitlines() if line.strip())
        try:
            num_frames = probe(video)[0]
        except DataError as e:
            out.append(Problem.from_error(e))
            continue
        if 0 < num_frames < num_labels:
            out.append(Problem(str(video), None, f"has {num_frames} frames but {labels} has {num_labels} labels; "
                                                 "streaming needs a frame for every label"))
    return out


def require_sound_data(root: str | Path, split: int, video_input: bool) -> None:
    """Raise `DatasetProblems` listing every problem of the run's data; return when there are none."""
    problems = run_data_problems(root, split, video_input)
    if problems:
        raise DatasetProblems(root, problems)
