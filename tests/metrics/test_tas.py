"""streamseg.metrics.tas against a literal re-statement of MS-TCN ``eval.py`` on random data.

The reference below deliberately follows the original's structure (frame loops, a full DP table,
argmax over every GT segment) and shares no code with the library. It adds only the degenerate-case
rules documented in docs/metrics.md, where the original gives NaN or crashes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamseg.metrics import (
    SegmentationMetrics,
    compute_metrics,
    edit_distance,
    edit_score,
    f1_counts,
    mean_over_splits,
    segments,
    upsample,
)
from streamseg.metrics.tas import f1_from_counts

TAUS = (0.10, 0.25, 0.50)


# ----------------------------------------------------------------------------- reference (MS-TCN style)
def ref_get_segments(frame_labels, bg_class, last_end=1):
    labels, starts, ends = [], [], []
    last_label = frame_labels[0]
    if frame_labels[0] not in bg_class:
        labels.append(frame_labels[0])
        starts.append(0)
    for i in range(len(frame_labels)):
        if frame_labels[i] != last_label:
            if frame_labels[i] not in bg_class:
                labels.append(frame_labels[i])
                starts.append(i)
            if last_label not in bg_class:
                ends.append(i)
            last_label = frame_labels[i]
    if last_label not in bg_class:
        ends.append(i + last_end)  # end = T (MS-TCN); i, the last index, in MS-TCN++/ASFormer (last_end=0)
    return labels, starts, ends


def ref_levenstein(p, y):
    m_row, n_col = len(p), len(y)
    D = np.zeros([m_row + 1, n_col + 1], float)
    for i in range(m_row + 1):
        D[i, 0] = i
    for i in range(n_col + 1):
        D[0, i] = i
    for j in range(1, n_col + 1):
        for i in range(1, m_row + 1):
            if y[j - 1] == p[i - 1]:
                D[i, j] = D[i - 1, j - 1]
            else:
                D[i, j] = min(D[i - 1, j] + 1, D[i, j - 1] + 1, D[i - 1, j - 1] + 1)
    return D[-1, -1]


def ref_edit(recognized, ground_truth, bg_class):
    P, _, _ = ref_get_segments(recognized, bg_class)
    Y, _, _ = ref_get_segments(ground_truth, bg_class)
    if max(len(P), len(Y)) == 0:
        return 100.0  # documented choice; MS-TCN: 0/0 = NaN
    return (1 - ref_levenstein(P, Y) / max(len(P), len(Y))) * 100


def ref_f_score(recognized, ground_truth, overlap, bg_class, per_class=None, last_end=1):
    p_label, p_start, p_end = ref_get_segments(recognized, bg_class, last_end)
    y_label, y_start, y_end = ref_get_segments(ground_truth, bg_class, last_end)
    tp, fp = 0, 0
    hits = np.zeros(len(y_label))
    for j in range(len(p_label)):
        if len(y_label) == 0:  # documented choice; MS-TCN: argmax of an empty sequence
            fp += 1
            if per_class is not None:
                per_class[p_label[j]][1] += 1
            continue
        intersection = np.minimum(p_end[j], y_end) - np.maximum(p_start[j], y_start)
        union = np.maximum(p_end[j], y_end) - np.minimum(p_start[j], y_start)
        with np.errstate(invalid="ignore"):  # last_end=0: two empty final segments give 0/0 = nan, never a TP
            IoU = (1.0 * intersection / union) * ([p_label[j] == y_label[x] for x in range(len(y_label))])
        idx = np.array(IoU).argmax()
        if IoU[idx] >= overlap and not hits[idx]:
            tp += 1
            hits[idx] = 1
            if per_class is not None:
                per_class[p_label[j]][0] += 1
        else:
            fp += 1
            if per_class is not None:
                per_class[p_label[j]][1] += 1
    fn = len(y_label) - sum(hits)
    if per_class is not None:
        for x in range(len(y_label)):
            if not hits[x]:
                per_class[y_label[x]][2] += 1
    return float(tp), float(fp), float(fn)


def ref_f1(tp, fp, fn):
    if tp + fp + fn == 0:
        return 100.0  # documented choice; MS-TCN: nan_to_num -> 0
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2.0 * (precision * recall) / (precision + recall) if precision + recall else 0.0
    return f1 * 100


def ref_dataset(videos, bg_class, last_end=1):
    """MS-TCN eval.py main(): pooled Acc, mean Edit, F1 from pooled counts; also per-video rows."""
    correct, total, edit = 0, 0, 0.0
    tp, fp, fn = np.zeros(3), np.zeros(3), np.zeros(3)
    rows = []
    for pred, gt in videos:
        recog = list(pred)
        row = {}
        for i in range(len(gt)):
            total += 1
            if gt[i] == recog[i]:
                correct += 1
        row["edit"] = ref_edit(recog[: len(gt)], list(gt), bg_class)
        edit += row["edit"]
        for s, overlap in enumerate(TAUS):
            a, b, c = ref_f_score(recog[: len(gt)], list(gt), overlap, bg_class, last_end=last_end)
            row[overlap] = (a, b, c)
            tp[s] += a
            fp[s] += b
            fn[s] += c
        rows.append(row)
    out = {"acc": 100 * float(correct) / total, "edit": edit / len(videos)}
    for s, overlap in enumerate(TAUS):
        out[f"f1@{int(round(overlap * 100))}"] = ref_f1(tp[s], fp[s], fn[s])
    return out, rows


# ----------------------------------------------------------------------------- random data
def random_segments(rng, length, num_classes, bg, bg_frac, max_segments):
    """A label sequence of ``length`` frames made of random runs (bg runs with probability bg_frac)."""
    n = int(rng.integers(1, min(length, max_segments) + 1))
    cuts = np.sort(rng.choice(np.arange(1, length), size=n - 1, replace=False)) if n > 1 else []
    bounds = np.concatenate(([0], cuts, [length])).astype(int)
    out = np.empty(length, dtype=np.int64)
    actions = [c for c in range(num_classes) if c not in bg]
    for s, e in zip(bounds[:-1], bounds[1:]):
        if bg and rng.random() < bg_frac:
            out[s:e] = rng.choice(bg)
        else:
            out[s:e] = rng.choice(actions)
    return out


def perturb(rng, gt, num_classes):
    """A prediction: GT with spurious runs, shifted boundaries, or an unrelated sequence."""
    kind = rng.integers(0, 4)
    pred = gt.copy()
    if kind == 0:  # spurious short runs
        for _ in range(rng.integers(0, 8)):
            s = rng.integers(0, len(pred))
            pred[s : s + rng.integers(1, 6)] = rng.integers(0, num_classes)
    elif kind == 1:  # shift by a few frames
        pred = np.roll(pred, int(rng.integers(-5, 6)))
    elif kind == 2:  # unrelated segments
        pred = random_segments(rng, len(gt), num_classes, [], 0.0, 25)
    elif len(gt) <= 40:  # frame-level noise on short sequences only (keeps the DP small)
        pred = rng.integers(0, num_classes, size=len(gt))
    if rng.random() < 0.15:  # longer than GT, as after sample-rate upsampling: truncated
        pred = np.concatenate((pred, rng.integers(0, num_classes, size=int(rng.integers(1, 4)))))
    return pred


def random_dataset(rng):
    k = int(rng.integers(2, 11))
    bg_choice = rng.integers(0, 3)
    bg = [] if bg_choice == 0 else ([k - 1] if bg_choice == 1 else [0, k - 1])
    if len(bg) >= k:
        bg = bg[:1]
    bg_frac = float(rng.uniform(0.0, 0.5))
    videos = []
    for _ in range(int(rng.integers(1, 7))):
        length = int(rng.integers(1, 401))
        if rng.random() < 0.2:
            length = int(rng.integers(1, 6))  # very short videos hit the edge cases
        gt = random_segments(rng, length, k, bg, bg_frac, 30)
        if bg and rng.random() < 0.03:
            gt[:] = bg[0]  # all-background video
        videos.append((perturb(rng, gt, k), gt))
    return k, bg, videos


# ----------------------------------------------------------------------------- tests
def test_matches_reference_on_random_datasets():
    rng = np.random.default_rng(20240611)
    n_videos = 0
    max_diff = 0.0
    while n_videos < 2000:
        k, bg, videos = random_dataset(rng)
        m = SegmentationMetrics(k, bg)
        for i, (pred, gt) in enumerate(videos):
            m.update(pred, gt, name=f"v{n_videos + i}")
        ours = m.compute()
        ref, ref_rows = ref_dataset(videos, bg)
        for key, value in ref.items():
            assert math.isfinite(ours[key])
            max_diff = max(max_diff, abs(ours[key] - value))
            assert ours[key] == pytest.approx(value, abs=1e-9), (key, videos)
        for (pred, gt), row, ref_row in zip(videos, m.per_video(), ref_rows):
            assert row["edit"] == pytest.approx(ref_row["edit"], abs=1e-9)
            for tau in TAUS:
                assert row[f"f1@{int(round(tau * 100))}"] == pytest.approx(ref_f1(*ref_row[tau]), abs=1e-9)
            if n_videos % 4 == 0:  # the stand-alone per-video functions, on a sample
                p = pred[: len(gt)]
                assert edit_score(p, gt, bg) == pytest.approx(ref_row["edit"], abs=1e-9)
                assert f1_counts(p, gt, TAUS[n_videos % 3], bg) == ref_row[TAUS[n_videos % 3]]
        n_videos += len(videos)
    assert max_diff < 1e-9


def test_per_class_counts_and_confusion_match_reference():
    rng = np.random.default_rng(7)
    for _ in range(60):
        k, bg, videos = random_dataset(rng)
        m = SegmentationMetrics(k, bg)
        cm = np.zeros((k, k), dtype=np.int64)
        counts = {tau: {c: [0, 0, 0] for c in range(k)} for tau in TAUS}
        for i, (pred, gt) in enumerate(videos):
            m.update(pred, gt, name=f"v{i}")
            for t in range(len(gt)):
                cm[gt[t], pred[t]] += 1
            for tau in TAUS:
                ref_f_score(list(pred[: len(gt)]), list(gt), tau, bg, per_class=counts[tau])
        assert np.array_equal(m.confusion_matrix(), cm)
        per_class = m.compute()["per_class"]
        for c in range(k):
            entry = per_class[str(c)]
            gt_frames = cm[c].sum()
            if gt_frames:
                assert entry["frame_acc"] == pytest.approx(100.0 * cm[c, c] / gt_frames)
            else:
                assert entry["frame_acc"] is None
            for tau in TAUS:
                tp, fp, fn = counts[tau][c]
                key = f"f1@{int(round(tau * 100))}"
                if c in bg:
                    assert entry[key] is None
                elif tp == fp == fn == 0:
                    assert entry[key] is None
                else:
                    p = tp / (tp + fp) if tp + fp else 0.0
                    r = tp / (tp + fn) if tp + fn else 0.0
                    expected = 200.0 * p * r / (p + r) if p + r else 0.0
                    assert entry[key] == pytest.approx(expected, abs=1e-9)


def test_worked_example_greedy_matching_counts():
    # GT a(0-10) b(10-20); prediction a(0-6) c(6-7) a(7-10) b(10-20). The second `a` piece's best
    # GT segment is already matched, so it is FP although it overlaps: TP=2, FP=2, FN=0 at every tau.
    a, b, c = 0, 1, 2
    gt = np.array([a] * 10 + [b] * 10)
    pred = np.array([a] * 6 + [c] + [a] * 3 + [b] * 10)
    m = SegmentationMetrics(3)
    m.update(pred, gt)
    for tau in TAUS:
        assert m.f1_counts(tau) == (2, 2, 0)
        assert f1_counts(pred, gt, tau) == (2, 2, 0)
    out = m.compute()
    # P = 2/4, R = 1 -> F1 = 2/3.
    assert out["f1@10"] == pytest.approx(200.0 / 3)
    assert out["acc"] == pytest.approx(100.0 * 19 / 20)
    # Edit: [a, c, a, b] vs [a, b] -> 2 deletions over max length 4.
    assert out["edit"] == pytest.approx(50.0)
    assert compute_metrics([(pred, gt)], 3) == out


def test_segments_end_exclusive_and_background_not_merged():
    labels = np.array([1, 1, 0, 1, 2, 2])
    assert [tuple(s) for s in segments(labels)] == [(1, 0, 2), (0, 2, 3), (1, 3, 4), (2, 4, 6)]
    # Background between two `1` runs leaves two segments (MS-TCN), not one.
    assert [tuple(s) for s in segments(labels, bg_ids=[0])] == [(1, 0, 2), (1, 3, 4), (2, 4, 6)]


def test_one_frame_final_segment_counts_as_tp():
    # The end-index variant (MS-TCN++/ASFormer) would score this FP + FN; end = T scores TP.
    gt = np.array([0, 0, 0, 1])
    assert f1_counts(gt.copy(), gt, 0.5) == (2, 0, 0)


def test_asformer_protocol_ends_the_final_segment_one_frame_early():
    """GT = prediction = a a a b: with end = T both segments match (F1 100); ASFormer's eval.py ends b at
    index 3 = its start, an empty segment that matches nothing: TP 1 (a), FP 1, FN 1 -> F1 50. Edit and Acc
    are the same under both."""
    gt = np.array([0, 0, 0, 1])
    results = {}
    for protocol in ("mstcn", "asformer"):
        m = SegmentationMetrics(2, protocol=protocol)
        m.update(gt.copy(), gt, "v")
        results[protocol] = m.compute()
    assert results["mstcn"]["f1@50"] == 100.0 and results["asformer"]["f1@50"] == pytest.approx(50.0)
    assert results["mstcn"]["edit"] == results["asformer"]["edit"] == 100.0
    # a longer final segment only shrinks: pred b over [1, 4), GT b over [2, 4) -> IoU 2/3 (mstcn) vs
    # [1, 3) and [2, 3): 1/2 (asformer); at tau 0.6 the first is TP, the second FP
    m = SegmentationMetrics(2, taus=(0.6,), protocol="asformer")
    m.update(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]), "v")
    assert m.f1_counts(0.6) == (0, 2, 2)  # a: IoU 1/2 as well
    with pytest.raises(ValueError, match="protocol"):
        SegmentationMetrics(2, protocol="c2f")


def test_asformer_protocol_matches_the_end_index_reference_on_random_datasets():
    rng = np.random.default_rng(7)
    n_videos = 0
    while n_videos < 300:
        k, bg, videos = random_dataset(rng)
        m = SegmentationMetrics(k, bg, protocol="asformer")
        for i, (pred, gt) in enumerate(videos):
            m.update(pred, gt, name=f"v{i}")
        ours, (ref, _) = m.compute(), ref_dataset(videos, bg, last_end=0)
        for key, value in ref.items():
            assert ours[key] == pytest.approx(value, abs=1e-9), (key, videos)
        n_videos += len(videos)


def test_iou_threshold_is_inclusive():
    gt = np.array([1] * 4 + [0] * 4)
    pred = np.array([1] * 2 + [0] * 6)  # IoU of the `1` segments = 2/4 = 0.5 exactly
    assert f1_counts(pred, gt, 0.5, bg_ids=[0]) == (1, 0, 0)
    assert f1_counts(pred, gt, 0.51, bg_ids=[0]) == (0, 1, 1)


def test_iou_ties_pick_the_first_gt_segment():
    # Prediction segment a[2,10) has IoU 2/10 with GT a[0,4) and 4/20 with GT a[6,22): a tie, which
    # MS-TCN's argmax gives to the first; the later a[12,22) then matches a[6,22). Picking the last
    # instead would make the later one an FP.
    gt = np.array([1] * 4 + [0] * 2 + [1] * 16)
    pred = np.array([0] * 2 + [1] * 8 + [0] * 2 + [1] * 10)
    assert f1_counts(pred, gt, 0.1, bg_ids=[0]) == (2, 0, 0)
    assert ref_f_score(list(pred), list(gt), 0.1, [0]) == (2.0, 0.0, 0.0)


def test_edit_distance_known_values():
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([], [1, 2]) == 2
    assert edit_distance([1, 2, 3, 4], [2, 3, 5]) == 2  # delete 1, substitute 4 -> 5
    assert edit_distance([5, 1, 2], [1, 2, 5]) == 2


def test_all_background_video_is_defined():
    gt = np.zeros(10, dtype=int)
    m = SegmentationMetrics(3, bg_ids=[0])
    m.update(np.zeros(10, dtype=int), gt, "empty_ok")
    out = m.compute()
    assert out["edit"] == 100.0 and out["f1@50"] == 100.0 and out["acc"] == 100.0
    # A predicted segment where GT has none: one FP, Edit 0, F1 0 (MS-TCN's script crashes here).
    m = SegmentationMetrics(3, bg_ids=[0])
    m.update(np.array([0] * 5 + [2] * 5), gt, "spurious")
    assert m.f1_counts(0.1) == (0, 1, 0)
    out = m.compute()
    assert out["edit"] == 0.0 and out["f1@10"] == 0.0


def test_prediction_length_rules():
    gt = np.array([0, 0, 1, 1])
    m = SegmentationMetrics(2)
    m.update(np.array([0, 0, 1, 1, 0, 0]), gt, "longer")  # extra frames ignored entirely
    assert m.compute()["acc"] == 100.0 and m.f1_counts(0.5) == (2, 0, 0)
    with pytest.raises(ValueError, match="'shorter'.*3 frames.*has 4"):
        m.update(np.array([0, 0, 1]), gt, "shorter")
    with pytest.raises(ValueError, match="empty"):
        m.update(np.array([], dtype=int), np.array([], dtype=int), "empty")
    with pytest.raises(ValueError, match="'bad_id'.*frame 2 has class id 5"):
        m.update(np.array([0, 0, 5, 1]), gt, "bad_id")
    with pytest.raises(ValueError, match="already added"):
        m.update(gt, gt, "longer")
    with pytest.raises(ValueError, match="no videos"):
        SegmentationMetrics(2).compute()


def test_upsample_repeats_then_truncates_or_pads():
    assert upsample(np.array([1, 2, 3]), 2, 5).tolist() == [1, 1, 2, 2, 3]
    assert upsample(np.array([1, 2]), 2, 7).tolist() == [1, 1, 2, 2, 2, 2, 2]
    assert upsample(np.array([4]), 1, 1).tolist() == [4]
    with pytest.raises(ValueError, match="sample_rate"):
        upsample(np.array([1]), 0, 3)


def test_f1_from_counts_degenerate():
    assert f1_from_counts(0, 0, 0) == 100.0
    assert f1_from_counts(0, 3, 0) == 0.0
    assert f1_from_counts(0, 0, 3) == 0.0
    assert f1_from_counts(1, 1, 1) == pytest.approx(50.0)


def test_per_video_rows_and_taus():
    m = SegmentationMetrics(2, taus=(0.75,))
    m.update(np.array([0, 1, 1, 1]), np.array([0, 0, 1, 1]), "a")
    row = m.per_video()[0]
    assert row["name"] == "a" and row["acc"] == 75.0 and "f1@75" in row
    with pytest.raises(KeyError, match="0.5"):
        m.f1_counts(0.5)
    with pytest.raises(ValueError, match="tau"):
        SegmentationMetrics(2, taus=(0.0,))


def test_mean_over_splits():
    s1 = {"acc": 80.0, "edit": 70.0, "num_videos": 7, "per_class": {"a": {"frame_acc": 50.0, "background": False}}}
    s2 = {"acc": 60.0, "edit": 72.0, "num_videos": 8, "per_class": {"a": {"frame_acc": None, "background": False}}}
    out = mean_over_splits([s1, s2])
    assert out["acc"] == 70.0 and out["edit"] == 71.0
    assert out["num_videos"] == 15 and out["num_splits"] == 2
    assert out["std"]["acc"] == 10.0
    assert out["per_class"]["a"]["frame_acc"] == 50.0  # None splits are left out
