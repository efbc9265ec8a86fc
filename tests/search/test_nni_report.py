"""The summary of an NNI experiment: the best succeeded trial with its re-run command, and the error of a
failed trial shown from its log (pure Python: NNI is not needed)."""

from __future__ import annotations

from rich.console import Console

from streamseg.search.nni_hpo import NNITrialResult, print_results


def _result(number: int, status: str, value: float | None, log: str = "") -> NNITrialResult:
    return NNITrialResult(number, f"id{number}", status, value, 2, {"train.lr": 0.1 * (number + 1)},
                          [f"train.lr={0.1 * (number + 1)!r}"], 0, f"streamseg train -o train.lr={0.1 * (number + 1)!r}",
                          10.0, log)


def test_best_is_the_highest_succeeded_trial_and_failures_show_their_error(tmp_path):
    log = tmp_path / "trial_log"
    log.mkdir()
    (log / "trial.stderr").write_text("Traceback (most recent call last):\n  ...\nValueError: out of memory\n\n")
    results = [_result(0, "SUCCEEDED", 40.0), _result(1, "EARLY_STOPPED", 90.0),  # stopped: never the best
               _result(2, "SUCCEEDED", 55.5), _result(3, "FAILED", None, str(log))]
    console = Console(record=True, width=200)
    best = print_results(console, results, "acc", "NNI study s")
    assert [b["number"] for b in best] == [2] and best[0]["values"] == [55.5]
    assert best[0]["command"] == "streamseg train -o train.lr=0.30000000000000004"
    text = console.export_text()
    assert "re-run: streamseg train -o train.lr=0.30000000000000004" in text
    assert "1 trial(s) failed; trial 3: ValueError: out of memory" in text


def test_no_succeeded_trial_gives_no_best():
    console = Console(record=True, width=200)
    assert print_results(console, [_result(0, "FAILED", None)], "acc", "s") == []
    assert "no trial succeeded" in console.export_text()
