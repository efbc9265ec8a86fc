"""Resuming an unfinished run whose saved params lack keys added since it started (engine/rundir.py)."""

from __future__ import annotations

import json

import pytest

from streamseg.config import ConfigError
from streamseg.engine.rundir import ParamsAddedWarning, claim_run_dir


def _unfinished(exp, params: dict) -> None:
    (exp / "version_0" / "config").mkdir(parents=True)
    (exp / "version_0" / "config" / "params.json").write_text(json.dumps(params))


def test_keys_added_since_the_run_started_resume_it_with_a_warning_naming_them(tmp_path):
    _unfinished(tmp_path, {"train": {"lr": 0.1}, "data": {"root": "x"}})
    now = {"train": {"lr": 0.1, "cudnn_benchmark": False, "sub": {"k": 1}}, "data": {"root": "x", "n": 2}}
    with pytest.warns(ParamsAddedWarning, match=r"train\.cudnn_benchmark=False, train\.sub=\{'k': 1\}, data\.n=2"):
        run, lock = claim_run_dir(tmp_path, now)
    lock.release()
    assert run.version == 0


def test_a_changed_key_still_refuses_beside_an_added_one(tmp_path):
    _unfinished(tmp_path, {"train": {"lr": 0.1}})
    with pytest.raises(ConfigError, match=r"different params \(train\.cudnn_benchmark: None -> True; "
                                          r"train\.lr: 0\.1 -> 0\.2\).*--new"):
        claim_run_dir(tmp_path, {"train": {"lr": 0.2, "cudnn_benchmark": True}})
    # a key the run had and this one lacks is a difference too (removed, not added)
    with pytest.raises(ConfigError, match=r"train\.lr: 0\.1 -> None"):
        claim_run_dir(tmp_path, {"train": {}})
    # a whole section the saved params lack is not "added" (a damaged or foreign params.json)
    with pytest.raises(ConfigError, match=r"model: None -> \{'n': 1\}"):
        claim_run_dir(tmp_path, {"train": {"lr": 0.1}, "model": {"n": 1}})
    run, lock = claim_run_dir(tmp_path, {"train": {"lr": 0.1}})  # the lock was released by each refusal
    lock.release()
    assert run.version == 0


def test_a_password_in_a_params_value_is_masked_in_the_warning_and_the_refusal(tmp_path):
    _unfinished(tmp_path, {"train": {"lr": 0.1, "store": "postgresql://u:old-secret@h/db"}})
    with pytest.raises(ConfigError) as refused:
        claim_run_dir(tmp_path, {"train": {"lr": 0.1, "store": "postgresql://u:new-secret@h/db"}})
    assert "secret" not in str(refused.value) and "postgresql://u:***@h/db" in str(refused.value)
    now = {"train": {"lr": 0.1, "store": "postgresql://u:old-secret@h/db", "url": "postgresql://u:pw-1234@h/db"}}
    with pytest.warns(ParamsAddedWarning) as warned:
        run, lock = claim_run_dir(tmp_path, now)
    lock.release()
    message = str(warned[0].message)
    assert "pw-1234" not in message and "train.url='postgresql://u:***@h/db'" in message
