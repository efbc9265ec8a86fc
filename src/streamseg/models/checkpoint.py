"""Reading weight files safely, and loading weights saved by the official implementations.

``read_weights_file(path)`` is the one checked load of a PyTorch file in the package (checkpoints,
``model.weights``, backbone weights): it checks the zip records' CRC-32, loads with ``weights_only=True``
(tensors and plain types only, so a file can never run code) and turns every failure into one line naming
the file and why, never torch's advice to turn safe loading off.

``load_weights(model, path, rename)`` reads the file with `read_weights_file`, unwraps
``{"state_dict" | "model" | "model_state_dict" | "model_state" (PySlowFast): ...}`` containers, strips a
``module.`` prefix (``nn.DataParallel``) or a ``net.`` prefix (a streamseg Lightning checkpoint), renames
keys with ``rename`` (official name -> ours; None drops the key, e.g. a classifier the model does not
have), and loads strictly. Any missing or unexpected key, or a shape mismatch, is an error naming the file
and the keys.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["load_weights", "read_state_dict", "read_weights_file", "WeightsError"]


class WeightsError(ValueError):
    """A weights file does not fit the model; the message names the file and the offending keys."""


def read_weights_file(path: str | Path) -> object:
    """The object saved at ``path`` (``torch.save``), loaded on the CPU with ``weights_only=True``.

    Raises `WeightsError`, one line naming the file: missing; damaged (a zip record failing its CRC-32, a
    truncated or non-PyTorch file); or refused because unpickling it would run code (the callable it
    names is given).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file")
    damaged = _zip_crc_failure(path)
    if damaged is not None:
        raise WeightsError(f"{path}: corrupt on disk: record {damaged!r} fails its CRC-32 check")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 (any failure of the load is reported the same way)
        raise WeightsError(f"{path}: {_why(e)}") from None


def _why(e: Exception) -> str:
    """torch.load's failure as our one-line reason. Its refusal of a pickle that would run code suggests
    weights_only=False: that advice is dropped, only the callable the file asked for is kept."""
    text = str(e)
    # "Unsupported operand": bytes that are no pickle at all (a text file), so a damaged file, not a refusal
    if "Weights only load failed" in text and "Unsupported operand" not in text:
        called = re.search(r"Unsupported (?:global|class)[:\s]+(?:GLOBAL\s+)?([\w.]+)", text)
        what = f" (it calls {called.group(1)})" if called else ""
        return (f"loading it needs code to unpickle, which is refused{what}: a weights file may hold only "
                "tensors and plain types")
    first = text.strip().splitlines()[0] if text.strip() else ""
    if "Weights only load failed" in text:  # torch's first line is its advice; keep only the unpickler's reason
        first = next((ln.strip() for ln in text.splitlines() if "Unsupported operand" in ln), "").split(".")[0]
    return (f"not a loadable checkpoint or weights file (truncated, corrupt, or not torch.save's): "
            f"{type(e).__name__}: {first}")


def _zip_crc_failure(path: Path) -> str | None:
    """The first record of a zip-format file whose CRC-32 does not match, else None.

    torch.save writes a zip with a CRC-32 per record but torch.load does not check them, so a flipped
    bit inside a tensor would load silently; reading the file once more through zipfile catches it.
    Files that are not zips (truncated ones among them) are left to torch.load to reject.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError):
        return None


def _unwrap(obj: object, path: str) -> dict[str, Tensor]:
    for key in ("state_dict", "model", "model_state_dict", "model_state"):
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
    """The state dict in ``path`` (read by `read_weights_file`; containers and prefixes unwrapped as above)."""
    path = str(path)
    if not Path(path).is_file():
        raise WeightsError(f"model.weights={path}: no such file")
    return _unwrap(read_weights_file(path), path)


def load_weights(model: nn.Module, path: str | Path, rename: Callable[[str], str | None] | None = None) -> nn.Module:
    """Load the state dict at ``path`` into ``model`` (strict); returns the model."""
    path = str(path)
    state = read_state_dict(path)
    if rename is not None:
        renamed = ((rename(k), v) for k, v in state.items())
        state = {k: v for k, v in renamed if k is not None}
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
