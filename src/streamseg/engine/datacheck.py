"""The dataset check that gates training: `streamseg.data.check` plus what streaming from video needs.

A run on a broken dataset must not die on the first bad file an hour in. `assembly.check_data` (called by
`assembly.build` after the data is prepared and before any model is built) runs `run_data_problems` on
rank 0 and raises `DatasetProblems` on every rank: every problem is reported at once, in the format of
`streamseg data check`, and nothing is trained.

* `data.input="features"`: `check_dataset(root, splits=[split], check_videos=False)`, i.e. the report
  of `streamseg data check ROOT --split k` (labels, mapping, features, lengths) without its check of
  `Videos/`, which such a run does not read.
* `data.input="video"`: the same report with the problems of `features/` left out (features are not
  read), and `Videos/` required. Each video's length is checked by the same code as `data check`
  (`streamseg.data.check`, through `streamseg.data.video_scan.scan_video`): its decodable frames,
  counted once and cached, must cover its labels (the stream reader needs a frame per label).
"""

from __future__ import annotations

from pathlib import Path

from ..data.check import Problem, check_dataset, format_problems
from ..data.errors import DataError


class DatasetProblems(DataError):
    """The dataset has problems; the message lists all of them (`format_problems`)."""

    def __init__(self, root: str | Path, problems: list[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(root, format_problems(self.problems)
                         + "\n(`streamseg data check` on the folder gives this report; it also checks Videos/, "
                           "which a run on features does not read)")


def run_data_problems(root: str | Path, split: int, video_input: bool, features_dir: str = "features",
                      notes: list[str] | None = None) -> list[Problem]:
    """Every problem that would stop (or silently spoil) a run on split `split` of `root`; ``notes``, when
    given, receives what is worth knowing about the videos read (rotated, interlaced, variable rate, ...).
    ``features_dir``: the folder of `root` the features are read from (`data.features_dir`)."""
    root = Path(root)
    problems = check_dataset(root, splits=[split], check_videos=video_input, notes=notes, features_dir=features_dir)
    if not video_input:
        return problems
    features = str(root / features_dir)
    problems = [p for p in problems if not (p.path == features or p.path.startswith(features + "/"))]
    if not (root / "Videos").is_dir():
        return problems + [Problem(str(root / "Videos"), None,
                                   "missing; data.input='video' needs Videos/<name>.mp4 (or .mkv, .mov, .ts, ...) "
                                   "for every listed video")]
    return problems
