"""DeepSpeed checkpoint folders read as Lightning checkpoints, without DeepSpeed and without running code.

With `train.strategy=deepspeed`, Lightning's `DeepSpeedStrategy.save_checkpoint` hands the checkpoint to
DeepSpeed's engine (`save_checkpoint(path, client_state=<the Lightning checkpoint less its state_dict and
optimizer_states>, tag="checkpoint")`), so `best.ckpt` and `last.ckpt` are folders::

    best.ckpt/latest                                          the tag: "checkpoint"
    best.ckpt/checkpoint/mp_rank_00_model_states.pt           ZeRO 1/2: the whole module's state dict
                                                              ("module") + DeepSpeed's keys + the client state
    best.ckpt/checkpoint/zero_pp_rank_<r>_mp_rank_00_model_states.pt   ZeRO 3, one per rank: the same keys,
                                                              parameters as empty placeholders
    best.ckpt/checkpoint/zero_pp_rank_<r>_mp_rank_00_optim_states.pt   each rank's optimiser shard; ZeRO 3:
                                                              its fp32 slice of every parameter ("fp32_flat_groups")
    best.ckpt/zero_to_fp32.py                                 DeepSpeed's conversion script

`read_folder` turns one into what a Lightning checkpoint file holds (``state_dict`` keyed as the
LightningModule's, ``epoch``, ``global_step``, the callbacks' and module's own keys), as Lightning's
`convert_zero_checkpoint_to_fp32_state_dict` does, but with `torch.load(weights_only=True)`: the model
states need nothing else; the optimiser shards (read only for ZeRO 3) pickle DeepSpeed objects (its loss
scaler, an enum, fragment addresses), which are rebuilt as inert `_DeepSpeedObject`s, never imported or
called. Stage 1/2 weights are the module's as trained (fp32 with `train.precision=32`; with 16-bit
precision the 16-bit copies, not the fp32 master weights DeepSpeed's script would return).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

# DeepSpeed's own keys in a model states file; the rest is the client state Lightning passed
# (the list of lightning.pytorch.utilities.deepspeed.convert_zero_checkpoint_to_fp32_state_dict, plus newer keys)
_DEEPSPEED_KEYS = {
    "module", "buffer_names", "optimizer", "param_shapes", "frozen_param_shapes", "shared_params",
    "frozen_param_fragments", "lr_scheduler", "data_sampler", "random_ltd", "sparse_tensor_module_names",
    "csr_tensor_module_names", "skipped_steps", "global_steps", "global_samples", "dp_world_size",
    "mp_world_size", "checkpoint_parallel_dimensions", "ds_config", "ds_version",
}


class FolderError(ValueError):
    """A DeepSpeed folder that cannot be read; the message names the file and why."""


def model_states_file(folder: str | Path) -> Path | None:
    """The rank-0 model states file of a DeepSpeed checkpoint folder, None when ``folder`` is not one."""
    folder = Path(folder)
    latest = folder / "latest"
    if not folder.is_dir() or not latest.is_file():
        return None
    tag = latest.read_text(encoding="utf-8", errors="replace").strip()
    if not tag or "/" in tag or "\\" in tag or tag in (".", ".."):
        return None
    for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt"):
        if (folder / tag / name).is_file():
            return folder / tag / name
    return None


def is_folder(path: str | Path) -> bool:
    """Whether ``path`` is a DeepSpeed checkpoint folder (`latest` naming a tag with model states)."""
    return model_states_file(path) is not None


def _load(path: Path, what: str = "DeepSpeed model states") -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, or a global beyond the allowed ones
        raise FolderError(f"{path}: cannot be read as {what} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200]})") from None


def client_state(folder: str | Path) -> dict[str, Any]:
    """The Lightning keys of a DeepSpeed folder (``epoch``, ``global_step``, ``callbacks``, ...), no weights."""
    states = _model_states(folder)
    return {k: v for k, v in states.items() if k not in _DEEPSPEED_KEYS}


def _model_states(folder: str | Path) -> dict[str, Any]:
    path = model_states_file(folder)
    if path is None:
        raise FolderError(f"{folder}: not a DeepSpeed checkpoint folder (expected a 'latest' file naming a tag "
                          "folder with mp_rank_00_model_states.pt or zero_pp_rank_0_mp_rank_00_model_states.pt)")
    states = _load(path)
    if not isinstance(states, dict) or "module" not in states:
        raise FolderError(f"{path}: not DeepSpeed model states (no 'module' key)")
    return states


def read_folder(folder: str | Path) -> dict[str, Any]:
    """A DeepSpeed checkpoint folder as a Lightning checkpoint dict (its client state + ``state_dict``)."""
    folder = Path(folder)
    states = _model_states(folder)
    checkpoint = {k: v for k, v in states.items() if k not in _DEEPSPEED_KEYS}
    module = states["module"]
    if model_states_file(folder).name.startswith("zero_pp_rank_"):  # ZeRO 3: parameters in the optimiser shards
        module = {**module, **_zero3_parameters(model_states_file(folder).parent, states)}
        empty = [k for k, v in module.items() if torch.is_tensor(v) and v.numel() == 0]
        if empty:  # frozen parameters (frozen_param_fragments), which no streamseg recipe has
            raise FolderError(f"{folder}: ZeRO 3 placeholders without weights in its shards: {empty[:5]}")
    checkpoint["state_dict"] = {k.removeprefix("_forward_module."): v for k, v in module.items()}
    return checkpoint


class _DeepSpeedObject:
    """Stands in for a DeepSpeed object pickled in an optimiser shard (loss scaler, enum, fragment address):
    its arguments or state are kept and nothing of DeepSpeed runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _load_optimizer_shard(path: Path) -> dict[str, Any]:
    """An optimiser shard with `weights_only=True`, DeepSpeed's pickled classes as `_DeepSpeedObject`s."""
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:
        raise FolderError(f"{path}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    foreign = [n for n in names if not n.startswith("deepspeed.")]
    if foreign:
        raise FolderError(f"{path}: refers to {foreign}, which a DeepSpeed optimiser shard never holds")
    with torch.serialization.safe_globals([(_DeepSpeedObject, n) for n in names]):
        shard = _load(path, "a DeepSpeed optimiser shard")
    if not isinstance(shard, dict) or "optimizer_state_dict" not in shard:
        raise FolderError(f"{path}: not a DeepSpeed optimiser shard (no 'optimizer_state_dict')")
    return shard["optimizer_state_dict"]


def _zero3_parameters(tag_dir: Path, states: dict[str, Any]) -> dict[str, torch.Tensor]:
    """ZeRO 3's trainable parameters, whole: rank r holds elements [r*p, (r+1)*p) of each parameter of n
    elements, p = ceil(n / world), the last rank's slice zero-padded; the slices lie one parameter after
    another, in the order of ``param_shapes``, in that rank's concatenated ``fp32_flat_groups``."""
    world, shape_groups = states.get("dp_world_size", 1), states.get("param_shapes", [])
    if not isinstance(world, int) or world < 1 or not isinstance(shape_groups, list) \
            or not all(isinstance(g, dict) for g in shape_groups):
        raise FolderError(f"{tag_dir}: zero_pp_rank_0_mp_rank_00_model_states.pt: expected dp_world_size a positive "
                          f"int and param_shapes a list of dicts, got {world!r} and {type(shape_groups).__name__}")
    flats = []
    for rank in range(world):
        path = tag_dir / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"
        if not path.is_file():
            raise FolderError(f"{path}: missing (a ZeRO 3 folder of {world} ranks has one optimiser shard per rank)")
        groups = _load_optimizer_shard(path).get("fp32_flat_groups")
        if not isinstance(groups, list) or not all(torch.is_tensor(g) for g in groups):
            raise FolderError(f"{path}: no 'fp32_flat_groups' tensors (not a ZeRO 3 optimiser shard)")
        flats.append(torch.cat([g.flatten() for g in groups]))
    shapes = {name: shape for group in shape_groups for name, shape in group.items()}
    params, offset = {}, 0
    for name, shape in shapes.items():
        if not isinstance(shape, (tuple, list, torch.Size)) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise FolderError(f"{tag_dir}: param_shapes[{name!r}] = {shape!r} is not a shape")
        n = math.prod(shape)
        p = math.ceil(n / world)
        if offset + p > min(len(f) for f in flats):
            raise FolderError(f"{tag_dir}: the optimiser shards end before parameter {name!r} (shape {list(shape)})")
        params[name] = torch.cat([f[offset:offset + p] for f in flats])[:n].view(*shape).clone()
        offset += p
    return params
