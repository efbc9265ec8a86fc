"""Typed overrides: parsing by field type, unknown keys rejected with the valid keys listed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from streamseg.config import ConfigError, RunParams, TrainParams, apply_overrides, flatten, to_jsonable
from streamseg.config.params import check_types, load_jsonable


@dataclass
class Data:
    root: str = "data/x"
    split: int = 1
    bg_classes: tuple[str, ...] = ("background",)
    fps: float = 15.0


@dataclass
class Model:
    num_layers: int = 10
    weights: str | None = None
    norm: Literal["batch", "layer"] = "batch"
    widths: list[int] = field(default_factory=lambda: [8, 16])
    causal: bool = True


def make() -> RunParams:
    return RunParams(data=Data(), model=Model(), train=TrainParams())


def test_overrides_parse_by_field_type():
    p = make()
    applied = apply_overrides(
        p,
        [
            "train.lr=1e-3",
            "train.epochs=7",
            "data.bg_classes=SIL,background",
            "model.weights=/tmp/w.pt",
            "model.norm=layer",
            "model.widths=[4, 5]",
            "model.causal=false",
            "data.fps=30",
        ],
    )
    assert p.train.lr == 1e-3 and p.train.epochs == 7
    assert p.data.bg_classes == ("SIL", "background")
    assert p.model.weights == "/tmp/w.pt" and p.model.norm == "layer"
    assert p.model.widths == [4, 5] and p.model.causal is False
    assert p.data.fps == 30.0 and isinstance(p.data.fps, float)
    assert applied["train.epochs"] == 7
    apply_overrides(p, ["model.weights=none", "data.bg_classes=[]"])
    assert p.model.weights is None and p.data.bg_classes == ()


def test_later_override_wins():
    p = make()
    apply_overrides(p, ["train.epochs=3", "train.epochs=5"])
    assert p.train.epochs == 5


@pytest.mark.parametrize(
    "item, message",
    [
        ("train.epochs=ten", "expected an int"),
        ("train.lr=fast", "expected a float"),
        ("model.causal=maybe", "expected a bool"),
        ("model.norm=group", "expected one of ['batch', 'layer']"),
        ("train.epochs", "expected dotted.key=value"),
    ],
)
def test_bad_values_name_the_key(item, message):
    with pytest.raises(ConfigError) as e:
        apply_overrides(make(), [item])
    assert message in str(e.value)
    assert item.split("=")[0] in str(e.value)


def test_unknown_key_is_rejected_with_valid_keys():
    p = make()
    with pytest.raises(ConfigError) as e:
        apply_overrides(p, ["train.lrr=1"])
    msg = str(e.value)
    assert "unknown override key 'train.lrr'" in msg
    for key in ("train.lr", "data.root", "model.num_layers", "data.split", "train.batch_size", "train.seed"):
        assert key in msg
    assert not hasattr(p.train, "lrr")


@pytest.mark.parametrize(
    "typo, suggestion",
    [("train.epoch", "train.epochs"), ("train.lrr", "train.lr"), ("epochs", "train.epochs"), ("trian.seed", "train.seed")],
)
def test_unknown_key_suggests_the_closest_valid_key(typo, suggestion):
    with pytest.raises(ConfigError) as e:
        apply_overrides(make(), [f"{typo}=1"])
    first_line = str(e.value).splitlines()[0]
    assert f"did you mean '{suggestion}'" in first_line


def test_unknown_key_far_from_every_key_gets_no_suggestion():
    with pytest.raises(ConfigError) as e:
        apply_overrides(make(), ["zzzz.qqqq=1"])
    assert "did you mean" not in str(e.value)


def test_intermediate_node_is_not_a_key():
    with pytest.raises(ConfigError, match="unknown override key 'train'"):
        apply_overrides(make(), ["train=1"])


def test_check_types_rejects_wrong_types_set_in_code():
    p = make()
    p.train.epochs = "10"  # type: ignore[assignment]
    with pytest.raises(ConfigError, match="train.epochs = '10': expected int"):
        check_types(p)
    p = make()
    p.train.lr = 1  # an int where a float is expected is fine
    check_types(p)


def test_json_round_trip():
    p = make()
    apply_overrides(p, ["data.bg_classes=a,b", "model.widths=1,2,3"])
    q = make()
    load_jsonable(q, to_jsonable(p))
    assert flatten(q) == flatten(p)
    assert q.data.bg_classes == ("a", "b")


def test_saved_params_missing_a_new_field_keep_its_default_and_say_so():
    saved = to_jsonable(make())
    del saved["model"]["causal"]
    q = make()
    q.model.causal = False  # will be reset? no: missing keys keep the current (default) value
    defaulted = load_jsonable(q, saved)
    assert defaulted == ["model.causal"] and q.model.causal is False
    saved["model"]["gone"] = 1
    with pytest.raises(ConfigError, match="model.gone"):
        load_jsonable(make(), saved)
