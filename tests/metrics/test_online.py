import numpy as np
import pytest

from streamseg.metrics import OnsetDelay, onset_delays


def brute_force(pred, gt, bg):
    """Frame loop: for each non-background GT run, scan forward for the first correct frame."""
    delays, missed = [], 0
    t = 0
    while t < len(gt):
        start, label = t, gt[t]
        while t < len(gt) and gt[t] == label:
            t += 1
        if label in bg:
            continue
        for u in range(start, t):
            if pred[u] == label:
                delays.append(u - start)
                break
        else:
            missed += 1
    return delays, missed


def test_known_example():
    # GT: a(0-5) bg(5-7) b(7-12) a(12-14). The prediction recognises the first a at once, b 3 frames
    # late, and the last a only in its 2 extra frames past the GT end (ignored): a miss.
    gt = np.array([1] * 5 + [0] * 2 + [2] * 5 + [1] * 2)
    pred = np.array([1] * 5 + [0] * 5 + [2] * 2 + [0] * 2 + [1, 1])  # 2 extra frames: ignored
    delays, missed = onset_delays(pred, gt, bg_ids=[0])
    assert delays.tolist() == [0, 3] and missed == 1
    m = OnsetDelay(bg_ids=[0], fps=15.0)
    m.update(pred, gt)
    out = m.compute()
    assert out["num_segments"] == 3 and out["num_hit"] == 2 and out["num_missed"] == 1
    assert out["mean_frames"] == 1.5 and out["median_frames"] == 1.5
    assert out["mean_s"] == pytest.approx(0.1)


def test_matches_brute_force_on_random_sequences():
    rng = np.random.default_rng(3)
    m = OnsetDelay(bg_ids=[0])
    all_delays, all_missed = [], 0
    for _ in range(300):
        k = int(rng.integers(2, 6))
        n = int(rng.integers(1, 120))
        gt = np.repeat(rng.integers(0, k, size=n // 4 + 1), rng.integers(1, 8, size=n // 4 + 1))
        pred = gt.copy()
        flip = rng.random(len(gt)) < rng.uniform(0, 0.8)
        pred[flip] = rng.integers(0, k, size=int(flip.sum()))
        delays, missed = onset_delays(pred, gt, [0])
        ref_delays, ref_missed = brute_force(pred, gt, [0])
        assert delays.tolist() == ref_delays and missed == ref_missed
        m.update(pred, gt)
        all_delays += ref_delays
        all_missed += ref_missed
    out = m.compute()
    assert out["num_missed"] == all_missed
    assert out["mean_frames"] == pytest.approx(np.mean(all_delays))
    assert out["median_frames"] == pytest.approx(np.median(all_delays))
    assert "mean_s" not in out  # no fps given


def test_nothing_hit_gives_none_not_nan():
    m = OnsetDelay(bg_ids=[0], fps=30)
    m.update(np.zeros(6, dtype=int), np.array([0, 1, 1, 0, 2, 2]))
    out = m.compute()
    assert out["num_missed"] == 2 and out["mean_frames"] is None and out["median_s"] is None


def test_short_prediction_is_an_error():
    with pytest.raises(ValueError, match="'clip7'.*2 frames"):
        onset_delays(np.array([1, 1]), np.array([1, 1, 1]), name="clip7")
