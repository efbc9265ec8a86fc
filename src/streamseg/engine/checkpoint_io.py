"""Crash-safe checkpoint files: atomic writes, one previous generation kept, validation with fallback.

Lightning's default `TorchCheckpointIO` writes straight to the target, so a job killed mid-write (or a
full disk) leaves a truncated `last.ckpt` and the run cannot resume. `AtomicCheckpointIO` (a Trainer
plugin) writes instead::

    serialize to memory -> <name>.<pid>.partial (write, fsync) -> hard-link the current <name> to <stem>.prev.ckpt
      -> os.replace(<name>.<pid>.partial, <name>) -> fsync the directory

so at every instant `<name>` is either the previous complete file or the new complete file, and after a
save `<stem>.prev.ckpt` holds the generation before it (a second line of defence when `<name>` is later
damaged on disk). A failed write (ENOSPC, EDQUOT, EIO, ...) removes the partial file, leaves both
generations untouched and raises `CheckpointWriteError` naming the file and the cause.

`usable_checkpoint(path)` is what resume, test, export and inference call: it checks the zip records' CRC-32
and loads `path` with `weights_only=True` (`streamseg.models.checkpoint.read_weights_file`, so a checkpoint
can never run code) and, when it is truncated or corrupt, falls back to `<stem>.prev.ckpt`
with a warning; when neither loads it raises `CheckpointError` naming both files and why.

A checkpoint is a file, or, after a `train.strategy=deepspeed` run, a DeepSpeed folder of the same name
(`best.ckpt/`, `last.ckpt/`: Lightning hands those saves to DeepSpeed, not to this plugin, so they are
neither atomic nor kept as a previous generation). Every reader here takes both (`checkpoint_exists`,
`load_checkpoint_file`, `checkpoint_epoch`; a folder is read by `zero_checkpoint.read_folder`), so test,
resume, export and the Python API work the same after a DeepSpeed run. FSDP runs save whole files
(`strategies.trainer_strategy`: `state_dict_type="full"`, written through this plugin).
"""

from __future__ import annotations

import errno
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from ..models.checkpoint import WeightsError, read_weights_file
from . import zero_checkpoint

# Checkpoint keys a Lightning training checkpoint always has; a file without them cannot resume a run.
_REQUIRED_KEYS = ("state_dict", "epoch", "global_step")


class CheckpointError(RuntimeError):
    """No usable checkpoint: the message names each file tried and why it was rejected."""


class CheckpointWriteError(OSError):
    """Writing a checkpoint failed (disk full, quota, I/O error); the previous checkpoint is intact."""


def previous_path(path: str | Path) -> Path:
    """`checkpoints/last.ckpt` -> `checkpoints/last.prev.ckpt` (the generation before `path`)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _partial_path(path: Path) -> Path:
    """`last.ckpt` -> `last.ckpt.<pid>.partial`: each process writes its own file, so two writers never
    share one. A killed writer's file is removed by the next process that claims the run directory
    (`rundir.claim_run_dir`)."""
    return path.with_name(f"{path.name}.{os.getpid()}.partial")


def _write_all(fd: int, data: memoryview) -> None:
    """os.write until every byte is on its way (a regular file may accept fewer bytes per call)."""
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: the directory entry must reach the disk, not only the file's data."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform or file system without directory handles: best effort
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | Path, keep_previous: bool = True) -> None:
    """`torch.save(obj)` to `path` so that a crash at any point leaves a complete file there.

    With `keep_previous`, the file `path` held before is kept as `previous_path(path)`. Raises
    `CheckpointWriteError` (an OSError, errno of the cause) when the data cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(obj, buffer)  # serialise first: a serialisation error must not touch the disk
    partial = _partial_path(path)
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, buffer.getbuffer())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        partial.unlink(missing_ok=True)
        cause = os.strerror(e.errno) if e.errno else str(e)
        hint = " (disk full: free space, then re-run the same command to resume)" if e.errno in (
            errno.ENOSPC, errno.EDQUOT) else ""
        kept = f"; the previous {path.name} is intact" if path.is_file() else "; no earlier checkpoint exists"
        raise CheckpointWriteError(
            e.errno, f"{path}: cannot write checkpoint ({buffer.getbuffer().nbytes} bytes): {cause}{hint}{kept}"
        ) from e
    if keep_previous and path.is_file():
        _keep_previous(path)
    os.replace(partial, path)
    _fsync_dir(path.parent)


def _keep_previous(path: Path) -> None:
    """`path` -> `previous_path(path)` without ever removing `path` (a hard link, atomically renamed)."""
    prev = previous_path(path)
    staging = _partial_path(prev)
    staging.unlink(missing_ok=True)
    try:
        os.link(path, staging)
    except OSError:  # a file system without hard links: copy (costs one checkpoint of I/O)
        import shutil

        shutil.copyfile(path, staging)
    os.replace(staging, prev)


def checkpoint_exists(path: str | Path) -> bool:
    """A checkpoint file, or a DeepSpeed checkpoint folder, is at ``path``."""
    return Path(path).is_file() or zero_checkpoint.is_folder(path)


def find_checkpoint(run_path: str | Path, ckpt: str | Path = "best") -> Path:
    """``"best"`` (``last`` when no validation chose one), ``"last"`` (in ``<run>/checkpoints/``) or a path,
    as a checkpoint that exists (`checkpoint_exists`); else FileNotFoundError naming it."""
    if str(ckpt) in ("best", "last"):
        path = Path(run_path) / "checkpoints" / f"{ckpt}.ckpt"
        if str(ckpt) == "best" and not checkpoint_exists(path):
            path = path.with_name("last.ckpt")
    else:
        path = Path(ckpt)
    if not checkpoint_exists(path):
        raise FileNotFoundError(f"{path}: no such checkpoint")
    return path


def load_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """A training checkpoint loaded safely (`streamseg.models.checkpoint.read_weights_file`: CRC-32 checked,
    `weights_only=True`, never code; a DeepSpeed folder: `zero_checkpoint.read_folder`); raises
    `CheckpointError`, one line naming the file, when it is missing, truncated, corrupt, refused (it would
    run code) or not a training checkpoint."""
    path = Path(path)
    if zero_checkpoint.is_folder(path):
        try:
            ckpt = zero_checkpoint.read_folder(path)
        except zero_checkpoint.FolderError as e:
            raise CheckpointError(str(e)) from None
    elif not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    else:
        try:
            ckpt = read_weights_file(path)
        except WeightsError as e:
            raise CheckpointError(str(e)) from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _REQUIRED_KEYS):
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not a training checkpoint; expected keys {list(_REQUIRED_KEYS)}, got {keys}")
    return ckpt


RESUME_HINT = " Start afresh with --new (or delete the damaged file)."


def checkpoint_epoch(path: str | Path) -> int:
    """The `epoch` of a checkpoint (one `usable_checkpoint` accepted), read without loading its tensors."""
    if zero_checkpoint.is_folder(path):
        return int(zero_checkpoint.client_state(path)["epoch"])
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["epoch"])


def usable_checkpoint(path: str | Path, hint: str = RESUME_HINT) -> Path:
    """`path` when it loads, else `previous_path(path)` (with a warning), else `CheckpointError` (ending
    with `hint`: what to do; the default is for a run that resumes, "" where the file is only read)."""
    return load_usable_checkpoint(path, hint)[0]


def load_usable_checkpoint(path: str | Path, hint: str = RESUME_HINT) -> tuple[Path, dict[str, Any]]:
    """(`usable_checkpoint(path, hint)`, that checkpoint loaded by `load_checkpoint_file`): one read of it."""
    path = Path(path)
    try:
        return path, load_checkpoint_file(path)
    except CheckpointError as e:
        first = str(e)
    prev = previous_path(path)
    if not prev.is_file():
        raise CheckpointError(f"{first}; and there is no previous checkpoint {prev.name} to fall back to.{hint}")
    try:
        ckpt = load_checkpoint_file(prev)
    except CheckpointError as e:
        raise CheckpointError(f"{first}; the previous checkpoint is unusable too: {e}.{hint}") from None
    warnings.warn(f"{first}; falling back to the previous checkpoint {prev} (epoch {ckpt['epoch']}): "
                  "the work since then is redone", CheckpointFallbackWarning, stacklevel=3)
    return prev, ckpt


class CheckpointFallbackWarning(UserWarning):
    """A damaged checkpoint was replaced by its previous generation."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning CheckpointIO plugin: `atomic_save` for every checkpoint, `weights_only` loads.

    Pass it to the Trainer: `Trainer(plugins=[AtomicCheckpointIO()])`. Lightning calls `save_checkpoint`
    on global rank 0 only.
    """

    def __init__(self, keep_previous: bool = True) -> None:
        super().__init__()
        self.keep_previous = keep_previous

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"AtomicCheckpointIO.save_checkpoint takes no storage_options, got {storage_options!r}")
        atomic_save(checkpoint, path, keep_previous=self.keep_previous)

    def load_checkpoint(self, path: Any, map_location: Any | None = None, weights_only: bool | None = None) -> dict:
        """Lightning's resume and test loads go through `load_checkpoint_file` too (one checked loader);
        tensors come to the CPU and Lightning moves them. `weights_only=False` is never honoured."""
        return load_checkpoint_file(path)

    def remove_checkpoint(self, path: Any) -> None:
        path = Path(path)
        if path.is_dir():  # a DeepSpeed folder (Lightning's DeepSpeed strategy removes through this plugin)
            import shutil

            shutil.rmtree(path)
        path.unlink(missing_ok=True)
        previous_path(path).unlink(missing_ok=True)
