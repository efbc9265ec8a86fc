"""Typed run parameters and `-o dotted.key=value` overrides.

A run's parameters are a tree of dataclasses::

    RunParams
      data   -> the dataset config's `Params`
      model  -> the model config's `Params`
      train  -> `TrainParams` (below)

Overrides are parsed against the annotated field type (int, float, bool, str, `X | None`, `Literal[...]`,
`tuple[T, ...]`, `list[T]`); an unknown key is rejected with the list of valid keys, never added.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal


class ConfigError(ValueError):
    """A config module or override is wrong; the message names the file or key and what was expected."""


@dataclass
class TrainParams:
    """What the engine reads. Every key is listed here; nothing else is read.

    epochs: passes over the training split. batch_size: videos (offline) or streams (streaming) per step
    and per process. lr / weight_decay: Adam defaults of MS-TCN (5e-4, 0). seed: seeds python, numpy and
    torch (and the data order). chunk_size: sampled frames per chunk for streaming training and evaluation;
    0 = whole videos (offline). tbptt_chunks: gradients flow through the state over this many chunks before
    it is detached (1 = SVTAS's SETE). grad_clip: max grad norm, 0 = off. accumulate: optimizer step every
    N batches (Lightning's: the count restarts each epoch, whose last batch always steps).
    accumulate_across_epochs: the count of `accumulate` runs across epochs instead, each batch's loss divided
    by N, a step after every N-th batch of the run (DiffAct's official loop; engine/accumulate.py; features
    only; the unfinished window's gradients are kept in checkpoints). precision: Lightning precision string. monitor: validation metric that picks `best.ckpt`
    (a key of metrics.json). select_on: the split that metric is computed on: "val" (a validation split;
    with none, `best` = last epoch) or "test" (explicit opt-in to test-set model selection, which
    published TAS numbers must not use). num_workers: DataLoader workers. persistent_workers: video
    streams: the training loader's decode workers start once and serve every epoch (false: new workers
    each epoch, each a fork of the training process). val_every: validate every N
    epochs. log_every: optimizer steps between logged training losses. deterministic: Lightning's
    deterministic mode (bit-exact resume on CPU). cudnn_benchmark: cuDNN times its convolution algorithms
    for each new input shape and keeps the fastest (``torch.backends.cudnn.benchmark``, Lightning's
    ``Trainer(benchmark=...)``): pays off on a GPU when few shapes recur (length buckets, stream batches),
    costs a timing pass per new shape otherwise; not with deterministic (cuDNN's choice can differ between
    runs). nonfinite: what a NaN/inf training loss does: "stop" the
    run with an error naming the step and the batch's videos, or "skip" that batch (warned with the same
    details, no optimizer step, counted in `train/skipped_steps`); never trained on. compile: run the
    network through ``torch.compile`` (in place, so checkpoints keep their parameter names; whole videos of
    varying length: see length_bucket; stream batches keep one shape; the number of graphs compiled is in
    metrics.json, ``train_throughput.compiled_graphs``).
    length_bucket: whole-video batches (features): N > 0 = the time axis padded (masked like any padding:
    for nets that mask it exactly, as MS-TCN does, losses and scores are unchanged; C2F-TCN's windowed
    smoothing counts padded windows) up to the next multiple of N sampled frames, so under compile one static
    graph per bucket compiles instead of one per video length; 0 = padded to the batch's longest video, the
    time axis marked dynamic under compile (inductor still specialises it for convolutional nets:
    `streamseg.engine.compiling` has the measured graph counts).
    compile_cache: where compiled kernels are kept across runs (inductor's FX graph cache and AOTAutograd's
    cache): "auto" = ``$XDG_CACHE_HOME/streamseg/torch_compile`` (``~/.cache`` without XDG_CACHE_HOME), a
    folder, or "off" (no reuse across runs).
    activation_checkpointing: recompute the frame encoder's block activations in the backward pass instead
    of keeping them (TSM encoders; `streamseg.models.set_activation_checkpointing`): less memory for bigger
    batches, about one more encoder forward pass of compute. shuffle: the order of the training
    videos (whole-video features): "seeded" (a permutation drawn from (seed, epoch)) or "python" (the official
    MS-TCN / MS-TCN++ / ASFormer BatchGenerator: the split file's order shuffled with Python's
    ``random.shuffle`` under ``random.seed(seed)`` once before the first epoch and once more, in place,
    before each next one) or "asformer" (ASFormer's BatchGenerator: before each shuffle it re-seeds Python's
    random with ``random.randint(0, 100)``), so a run can be compared with the official code step by step.
    stream_order: the training order of videos for stream batches (``data.input=video``): "packed" (default:
    a shuffle chosen among 32 drawn from (seed, epoch) to leave the fewest idle slots at the epoch's end,
    `streamseg.data.streams.packed_order`; 42 instead of 48-49 steps for ``data synth``'s 48 training videos
    at 16 x 32) or "shuffled" (a plain permutation, as before).

    Optimiser, schedule and early stopping (`streamseg.engine.schedules`; every recipe honours them):
    optimizer: "adam" (default), "adamw" (decoupled weight decay) or "sgd"; lr and weight_decay apply to all
    three. momentum / nesterov: SGD's momentum and Nesterov momentum (nesterov needs sgd and momentum > 0).
    schedule: the learning rate per epoch: "none" (constant, or the recipe's own schedule, e.g. ASFormer's
    plateau on the training loss: today's behaviour), "cosine_restarts" (cosine annealing from lr to min_lr
    over restart_epochs epochs, each cycle restart_mult times longer than the last), "step" (x gamma every
    step_size epochs), "multistep" (x gamma at each epoch of milestones, strictly increasing) or "plateau"
    (x gamma when the validation metric plateau_metric, '' = monitor, has not improved in plateau_mode for
    plateau_patience validations; not below min_lr). Any schedule other than "none", or a warm-up, replaces
    the recipe's own. warmup_epochs: epochs of linear warm-up in front of the schedule (epoch e < W trains at
    lr x (e + 1) / (W + 1)); the schedule then starts from its own epoch 0. early_stop_metric: '' (off) or a
    validation metric (a key of metrics.json: acc, edit, f1@10, f1@25, f1@50) whose lack of progress stops
    training: early_stop_patience validations in a row without an improvement larger than
    early_stop_min_delta in early_stop_mode ("max" or "min"); the stopped epoch and the reason go to
    metrics.json (`early_stopping`), and the state resumes with the run.

    Distributed strategy (`streamseg.engine.strategies`): strategy: "ddp" (default: Lightning's DDP over
    the processes of the launch, one device as is), "fsdp" (Fully Sharded Data Parallel: parameters,
    gradients and optimiser state sharded over the GPUs; GPU only, Lightning refuses it on the CPU) or
    "deepspeed" (DeepSpeed ZeRO; the optional extra `streamseg[deepspeed]`, GPU only). zero_stage:
    DeepSpeed's ZeRO stage, 1 (optimiser state sharded) or 2 (+ gradients); only with strategy
    "deepspeed". 3 (+ parameters) parses but is refused before training: DeepSpeed's test-time engine
    cannot load a ZeRO-3 checkpoint (deepspeedai/DeepSpeed#7272; failed so on an H100). A strategy this
    machine cannot run is refused before any work. Checkpoints:
    "ddp" and "fsdp" (gathered whole, `state_dict_type="full"`) save files; "deepspeed" saves DeepSpeed's
    folders (`best.ckpt/`, `last.ckpt/`), which test, `streamseg test`, resume, export and the Python API
    read as files (`engine/zero_checkpoint.py`, without DeepSpeed), but which are not written atomically
    and keep no previous generation (DeepSpeed writes them, not streamseg's checkpoint plugin).
    """

    epochs: int = 50
    batch_size: int = 1
    lr: float = 5e-4
    weight_decay: float = 0.0
    seed: int = 0
    chunk_size: int = 0
    tbptt_chunks: int = 1
    grad_clip: float = 0.0
    accumulate: int = 1
    accumulate_across_epochs: bool = False
    precision: str = "32-true"
    monitor: str = "f1@50"
    select_on: Literal["val", "test"] = "val"
    num_workers: int = 0
    persistent_workers: bool = True
    val_every: int = 1
    log_every: int = 10
    deterministic: bool = False
    cudnn_benchmark: bool = False
    nonfinite: Literal["stop", "skip"] = "stop"
    compile: bool = False
    length_bucket: int = 0
    compile_cache: str = "auto"
    activation_checkpointing: bool = False
    shuffle: Literal["seeded", "python", "asformer"] = "seeded"
    stream_order: Literal["packed", "shuffled"] = "packed"
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    momentum: float = 0.9
    nesterov: bool = False
    schedule: Literal["none", "cosine_restarts", "step", "multistep", "plateau"] = "none"
    warmup_epochs: int = 0
    min_lr: float = 0.0
    restart_epochs: int = 10
    restart_mult: int = 1
    step_size: int = 30
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    plateau_metric: str = ""
    plateau_mode: Literal["max", "min"] = "max"
    plateau_patience: int = 5
    early_stop_metric: str = ""
    early_stop_mode: Literal["max", "min"] = "max"
    early_stop_patience: int = 10
    early_stop_min_delta: float = 0.0
    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    zero_stage: Literal[1, 2, 3] = 2


@dataclass
class RunParams:
    data: Any
    model: Any
    train: TrainParams = field(default_factory=TrainParams)


# ----------------------------------------------------------------------------------------------------
# flattening and overrides


def _field_types(obj: Any) -> dict[str, Any]:
    """Resolved annotations of a dataclass instance (handles `from __future__ import annotations`)."""
    try:
        hints = typing.get_type_hints(type(obj))
    except Exception as e:  # a config with an unresolvable annotation
        raise ConfigError(f"cannot resolve the field types of {type(obj).__qualname__}: {e}") from e
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(obj)}


def flatten(params: Any, prefix: str = "") -> dict[str, Any]:
    """`{"train.lr": 0.0005, ...}` for every leaf of a dataclass tree."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(flatten(value, key + "."))
        else:
            out[key] = value
    return out


def to_jsonable(params: Any) -> dict[str, Any]:
    """A JSON-safe nested dict of a dataclass tree (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(params), default=str))


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_value(text: str, tp: Any, key: str) -> Any:
    """Parse the override string `text` as type `tp`; errors name `key` and the expected type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return text
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.lower() in {"none", "null"}:
            return None
        errors = []
        for a in (a for a in args if a is not type(None)):
            try:
                return parse_value(text, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"override {key}={text!r}: expected {_type_name(tp)}")
    if origin is Literal:
        for choice in args:
            if str(choice) == text:
                return choice
        raise ConfigError(f"override {key}={text!r}: expected one of {list(args)}")
    if origin in (tuple, list):
        items = _split_list(text, key)
        elem = args[0] if args else Any
        values = [parse_value(item, elem, key) for item in items]
        return tuple(values) if origin is tuple else values
    if tp is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"override {key}={text!r}: expected a bool (true/false)")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"override {key}={text!r}: expected an int") from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"override {key}={text!r}: expected a float") from None
    if tp is str:
        return text
    raise ConfigError(f"override {key}: fields of type {_type_name(tp)} cannot be set from the command line")


def _split_list(text: str, key: str) -> list[str]:
    """`a,b,c`, `[a, b]` or a JSON list; `[]` or empty is the empty list."""
    text = text.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
            if isinstance(value, list):
                return [str(v) for v in value]
        except json.JSONDecodeError:
            text = text[1:-1] if text.endswith("]") else text
    if text in ("", "[]"):
        return []
    return [t.strip() for t in text.split(",")]


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def parse_override(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected dotted.key=value, e.g. train.lr=1e-3")
    key, _, value = item.partition("=")
    return key.strip(), value.strip()


def unknown_key_message(key: str, valid: Iterable[str]) -> str:
    """``unknown override key 'x' (did you mean 'y'?). Valid keys: ...``: the closest keys first (difflib
    on the whole dotted key and on its last part, so ``train.epoch`` and ``epochs`` both find
    ``train.epochs``), then every valid key."""
    valid = sorted(valid)
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    leaf = key.rsplit(".", 1)[-1]
    close += [k for k in valid if k.rsplit(".", 1)[-1] == leaf and k not in close]
    hint = f" (did you mean {' or '.join(repr(k) for k in close[:3])}?)" if close else ""
    keys = "\n  ".join(valid)
    return f"unknown override key {key!r}{hint}. Valid keys:\n  {keys}"


def apply_overrides(params: RunParams, overrides: list[str]) -> dict[str, Any]:
    """Apply `-o` items in order; returns {key: parsed value}. Unknown keys raise with the valid keys."""
    valid = flatten(params)
    applied: dict[str, Any] = {}
    for item in overrides:
        key, text = parse_override(item)
        if key not in valid:
            raise ConfigError(unknown_key_message(key, valid))
        *path, leaf = key.split(".")
        node = params
        for part in path:
            node = getattr(node, part)
        value = parse_value(text, _field_types(node)[leaf], key)
        setattr(node, leaf, value)
        applied[key] = value
    return applied


def check_types(params: Any, prefix: str = "") -> None:
    """Reject values a config set with the wrong type (e.g. `params.train.epochs = "10"`)."""
    types_ = _field_types(params)
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_types(value, key + ".")
            continue
        if not _matches(value, types_[f.name]):
            raise ConfigError(f"{key} = {value!r}: expected {_type_name(types_[f.name])}")


def _matches(value: Any, tp: Any) -> bool:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if origin in (tuple, list):
        return isinstance(value, origin) and (not args or all(_matches(v, args[0]) for v in value))
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def load_jsonable(params: Any, data: dict[str, Any], prefix: str = "") -> list[str]:
    """Set a dataclass tree from a nested dict written by `to_jsonable` (lists become tuples where typed so).

    Keys the saved dict lacks (a field added to a config after the run) keep their defaults and are
    returned, so a caller can say so; saved keys the dataclass no longer has are an error naming them.
    """
    types_ = _field_types(params)
    names = {f.name for f in dataclasses.fields(params)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"saved params have keys the config no longer defines: {[prefix + k for k in unknown]}")
    defaulted: list[str] = []
    for f in dataclasses.fields(params):
        key = f"{prefix}{f.name}"
        if f.name not in data:
            defaulted.append(key)
            continue
        value = getattr(params, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            defaulted += load_jsonable(value, data[f.name], key + ".")
            continue
        new = data[f.name]
        if isinstance(new, list) and typing.get_origin(types_[f.name]) is tuple:
            new = tuple(new)
        setattr(params, f.name, new)
    check_types(params, prefix)
    return defaulted
