"""streamseg.metrics.detection: SVTAS-style AUC and ActivityNet mAP, with SVTAS's bugs fixed."""

import numpy as np
import pytest

from streamseg.metrics import DetectionMetrics
from streamseg.metrics.detection import interpolated_ap


def one_hot_scores(pred, k, noise=None):
    s = np.eye(k)[pred].T.astype(float)  # (K, T)
    return s if noise is None else s + noise


# ----------------------------------------------------------------------------- references (loops)
def runs(labels, bg):
    out, t = [], 0
    while t < len(labels):
        s = t
        while t < len(labels) and labels[t] == labels[s]:
            t += 1
        if labels[s] not in bg:
            out.append((int(labels[s]), s, t))
    return out


def ref_auc(videos, bg, tious, max_an):
    """SVTAS boundary_AR re-stated with the fixes: every AN evaluated, none -> recall 0."""
    per_video = []
    for pred, gt, scores in videos:
        gts = runs(gt, bg)
        if not gts:
            continue
        props = [(float(np.mean(scores[c, s:e])), s, e) for c, s, e in runs(pred, bg)]
        props = sorted(props, key=lambda x: -x[0])  # Python's sort is stable
        curve = []
        for an in range(1, max_an + 1):
            top = props[:an]
            recalls = []
            for thr in tious:
                hits = [False] * len(gts)
                tp = 0
                for _, s, e in top:
                    ious = [(min(e, ge) - max(s, gs)) / (max(e, ge) - min(s, gs)) for _, gs, ge in gts]
                    j = int(np.argmax(ious))
                    if ious[j] >= thr and not hits[j]:
                        hits[j] = True
                        tp += 1
                recalls.append(tp / len(gts))
            curve.append(np.mean(recalls))
        per_video.append(curve)
    return 100 * float(np.mean(per_video))


def ref_map(videos, bg, k, tious):
    aps = []
    for c in range(k):
        if c in bg:
            continue
        gts = [(v, s, e) for v, (_, gt, _) in enumerate(videos) for cc, s, e in runs(gt, bg) if cc == c]
        if not gts:
            continue
        dets = [
            (float(np.mean(sc[c, s:e])), v, s, e)
            for v, (pred, _, sc) in enumerate(videos)
            for cc, s, e in runs(pred, bg)
            if cc == c
        ]
        dets.sort(key=lambda d: -d[0])
        ap_c = []
        for thr in tious:
            used = set()
            tp = []
            for _, v, s, e in dets:
                cands = []
                for j, (gv, gs, ge) in enumerate(gts):
                    if gv != v:
                        continue
                    inter = max(0, min(e, ge) - max(s, gs))
                    cands.append((inter / ((e - s) + (ge - gs) - inter), j))
                cands.sort(key=lambda x: -x[0])
                ok = 0
                for iou, j in cands:
                    if iou < thr:
                        break
                    if j not in used:
                        used.add(j)
                        ok = 1
                        break
                tp.append(ok)
            tp_c = np.cumsum(tp)
            prec = [tp_c[i] / (i + 1) for i in range(len(tp))]
            rec = [tp_c[i] / len(gts) for i in range(len(tp))]
            # Envelope by direct maximum over higher recalls; sum over recall steps.
            ap, prev_r = 0.0, 0.0
            for i in range(len(tp)):
                if rec[i] != prev_r:
                    ap += (rec[i] - prev_r) * max(prec[i:])
                    prev_r = rec[i]
            ap_c.append(ap)
        aps.append(ap_c)
    return 100 * np.mean(aps, axis=0)


# ----------------------------------------------------------------------------- tests
def test_exactly_an_proposals_and_none_are_scored():
    # Three perfect proposals, max_proposals = 3: SVTAS returned AR = 0 at AN = 3 (len == AN).
    gt = np.array([0, 1, 1, 0, 2, 2, 0, 1, 0])
    m = DetectionMetrics(3, bg_ids=[0], max_proposals=3)
    m.update(gt, gt, one_hot_scores(gt, 3))
    out = m.compute()
    # AN=1 finds 1 of 3 GT segments, AN=2 two, AN=3 all: AUC = mean(1/3, 2/3, 1).
    assert out["auc"] == pytest.approx(100 * (1 / 3 + 2 / 3 + 1) / 3)
    assert out["ar@1"] == pytest.approx(100 / 3)
    # No proposals at all: recall 0 (a real score, not a skipped video); all-background GT: skipped.
    m = DetectionMetrics(3, bg_ids=[0])
    m.update(np.zeros(9, dtype=int), gt, np.zeros((3, 9)))
    m.update(gt, np.zeros(9, dtype=int), one_hot_scores(gt, 3))
    out = m.compute()
    assert out["auc"] == 0.0 and out["num_videos_with_gt"] == 1


def test_ap_hand_example_and_absent_class_excluded():
    # Class 1: GT segments [0,4) and [10,14). Detections by score: perfect (0.9), nowhere (0.8),
    # perfect on the second (0.7) -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = 1/2 + 1/3.
    gt = np.array([1] * 4 + [0] * 6 + [1] * 4)
    pred = np.array([1] * 4 + [0] + [1] * 2 + [0] * 3 + [1] * 4)
    scores = np.zeros((3, 14))
    scores[1, 0:4], scores[1, 5:7], scores[1, 10:14] = 0.9, 0.8, 0.7
    m = DetectionMetrics(3, bg_ids=[0], class_names=["bg", "cut", "stir"])
    m.update(pred, gt, scores)
    out = m.compute()
    assert out["map@50"] == pytest.approx(100 * (0.5 + 1 / 3))
    assert out["ap_per_class"]["cut"] == pytest.approx(100 * (0.5 + 1 / 3))
    # "stir" never occurs in the GT: excluded from the mean (SVTAS would halve mAP with an AP of 0).
    assert out["absent_classes"] == ["stir"] and out["ap_per_class"]["stir"] is None
    assert out["map"] == pytest.approx(100 * (0.5 + 1 / 3))


def test_interpolated_ap_envelope():
    assert interpolated_ap(np.array([1.0, 0.5, 2 / 3]), np.array([0.5, 0.5, 1.0])) == pytest.approx(5 / 6)
    assert interpolated_ap(np.array([0.0]), np.array([0.0])) == 0.0


def test_matches_loop_references_on_random_data():
    rng = np.random.default_rng(11)
    for _ in range(15):
        k = int(rng.integers(3, 6))
        videos = []
        for _ in range(int(rng.integers(1, 4))):
            n = int(rng.integers(5, 80))
            gt = np.repeat(rng.integers(0, k, size=n), rng.integers(1, 10, size=n))
            pred = gt.copy()
            noise = rng.random(len(gt)) < 0.1
            pred[noise] = rng.integers(0, k, size=int(noise.sum()))
            videos.append((pred, gt, rng.random((k, len(gt)))))
        m = DetectionMetrics(k, bg_ids=[0], max_proposals=12)
        for pred, gt, sc in videos:
            m.update(pred, gt, sc)
        out = m.compute()
        if out["num_videos_with_gt"]:
            assert out["auc"] == pytest.approx(ref_auc(videos, [0], (0.1, 0.25, 0.5), 12), abs=1e-9)
        ref = ref_map(videos, [0], k, m.map_tious)
        for t, thr in enumerate(m.map_tious):
            assert out[f"map@{thr * 100:g}"] == pytest.approx(ref[t], abs=1e-9)


def test_bad_scores_shape_names_the_video():
    m = DetectionMetrics(3)
    with pytest.raises(ValueError, match="'v1'.*expected shape"):
        m.update(np.zeros(5, dtype=int), np.zeros(5, dtype=int), np.zeros((2, 5)), name="v1")
