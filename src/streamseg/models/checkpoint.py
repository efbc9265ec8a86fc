"""Loading weights saved by the official implementations (``torch.save(model.state_dict(), path)``).

``load_weights(model, path, rename)`` reads the file with ``weights_only=True`` (a checkpoint cannot run
code), unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` containers, strips a ``module.`` prefix
(``nn.DataParallel``) or a ``net.`` prefix (a streamseg Lightning checkpoint), renames keys with
``rename`` (official name -> ours), and loads strictly. Any missing or unexpected key, or a shape
mismatch, is an error naming the file and the keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["load_weights", "read_state_dict", "WeightsError"]


class WeightsError(ValueError):
    """A weights file does not fit the model; the message names the file and the offending keys."""


def _unwrap(obj: object, path: str) -> dict[str, Tensor]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict (parameter name -> tensor), got {type(obj).__name__}")
    state = dict(obj)
    for prefix in ("module.", "net."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def _short(keys: list[str], limit: int = 12) -> str:
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict in ``path`` (``weights_only=True``, containers and prefixes unwrapped as above)."""
    path = str(path)
    if not Path(path).is_file():
        raise WeightsError(f"model.weights={path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or one that needs code to unpickle
        raise WeightsError(f"{path}: cannot be read as a state dict with weights_only=True: {e}") from e
    return _unwrap(obj, path)


def load_weights(model: nn.Module, path: str | Path, rename: Callable[[str], str] | None = None) -> nn.Module:
    """Load the state dict at ``path`` into ``model`` (strict); returns the model."""
    path = str(path)
    state = read_state_dict(path)
    if rename is not None:
        state = {rename(k): v for k, v in state.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k}: file {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        lines = [f"{path} does not fit {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_short(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_short(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {_short(shapes)}")
        lines.append("  (check the model parameters: num_classes, layers, stages, maps)")
        raise WeightsError("\n".join(lines))
    model.load_state_dict(state, strict=True)
    return model
