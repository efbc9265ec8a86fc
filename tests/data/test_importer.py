"""`streamseg data import`: the standard layout from a table of segments (tiny mp4 files, 10 fps)."""

from __future__ import annotations

import numpy as np
import pytest

from streamseg.cli.main import main
from streamseg.data.errors import DataError
from streamseg.data.importer import import_segments
from streamseg.data.layout import TASLayout
from streamseg.data.synth_render import encode_mp4

LENGTHS = {"a": 20, "b": 30, "c": 10}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    for name, frames in LENGTHS.items():
        encode_mp4(folder / f"{name}.mp4", np.zeros((frames, 16, 16, 3), np.uint8), 10)
    return folder


def test_import_builds_a_dataset_that_passes_the_check(videos, tmp_path, capsys):
    table = tmp_path / "segments.csv"
    # a header in another order, seconds at 10 fps; a gap in "a" (frames 5..7) and at the end of "b"
    table.write_text("label,video,start,end,note\n"
                     "pour,a,0,0.5,x\n"
                     "stir,a,0.8,2.0,\n"
                     "# a comment\n"
                     "stir,b,0,2.5,\n"
                     "pour,c,0,1.0,\n")
    root = tmp_path / "ds"
    assert main(["data", "import", "--segments", str(table), "--videos", str(videos), "--root", str(root),
                 "--folds", "3"]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    layout = TASLayout(root)
    assert layout.classes == ["background", "pour", "stir"]
    a = layout.load_labels("a")
    assert a.tolist() == [1] * 5 + [0] * 3 + [2] * 12
    assert layout.load_labels("b").tolist() == [2] * 25 + [0] * 5
    tests = [layout.split_names("test", k) for k in (1, 2, 3)]
    assert sorted(n for t in tests for n in t) == sorted(LENGTHS)  # each video tested in exactly one fold
    for k, test in enumerate(tests, 1):
        assert sorted(layout.split_names("train", k) + test) == sorted(LENGTHS)
    assert layout.video_path("b").resolve() == (videos / "b.mp4").resolve()
    assert "8 frames in 2 video(s) filled with 'background'" in out and "no problems" in out


def test_every_problem_of_the_table_is_listed_with_its_line_and_nothing_is_written(videos, tmp_path):
    table = tmp_path / "segments.tsv"
    table.write_text("a\t0\t10\tpour\n"
                     "a\t8\t20\tstir\n"  # overlaps line 1
                     "b\t0\t31\tstir\n"  # past the end (30 frames)
                     "b\t5\t5\tpour\n"  # empty
                     "zz\t0\t3\tpour\n"  # no such video
                     "a\t10\t12\ttwo words\n")
    root = tmp_path / "ds"
    with pytest.raises(DataError) as err:
        import_segments(table, videos, root, units="frames")
    text = str(err.value)
    for line, what in [(2, "overlaps the segment of line 1"), (3, "after the video's 30 frames"),
                       (4, "start < end"), (5, "'zz' is not in"), (6, "one word")]:
        assert f"{table}:{line}: " in text and what in text, (line, what)
    assert "c.mp4: no segment of this video" in text
    assert not root.exists()


def test_given_lists_make_one_split_and_an_existing_dataset_is_not_overwritten(videos, tmp_path):
    table = tmp_path / "s.csv"
    table.write_text("".join(f"{n},0,{t},act\n" for n, t in LENGTHS.items()))
    root = tmp_path / "ds"
    summary = import_segments(table, videos, root, units="frames", split_lists=(["a", "b"], ["c"]))
    assert summary.folds == 1 and summary.gaps == {} and summary.classes == ["act"]
    layout = TASLayout(root)
    assert layout.split_names("train", 1) == ["a", "b"] and layout.split_names("test", 1) == ["c"]
    with pytest.raises(DataError, match="already exists"):
        import_segments(table, videos, root, units="frames")
