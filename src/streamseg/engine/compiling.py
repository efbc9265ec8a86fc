"""What `train.compile` needs beyond `nn.Module.compile`: one graph for every video length, and a compile
cache that outlives the process.

Video lengths. Whole-video batches (offline features) change their time axis T with every batch.
Graphs counted with `throughput.compiled_graphs` on CPU, torch 2.14 (MS-TCN 2 x 4 x 8, eight training
batches of distinct lengths 203-530, forward + backward; a scratch script, the two streamseg modes are
held by tests/engine/test_length_buckets.py with six lengths):

    backend   T handling                                         training graphs
    eager     torch.compile default (dynamic=None)               2 (the first length static, then dynamic)
    eager     dynamic=False                                      8 (one per length)
    eager     T marked dynamic (`train.length_bucket=0`)         1
    eager     T padded to multiples of 64, dynamic=False         6 (one per bucket)
    inductor  T marked dynamic                                   8: inductor specialises T

Inductor's lowering of the convolution backward pass (torch 2.14, ``kernel/conv.py``
``convolution_backward_lowering``: ``guard_int_seq`` of the input gradient's strides) turns the symbolic
length into a constant, so for convolutional nets (MS-TCN and its kin) a marked-dynamic T still compiles
once per length under inductor, and dynamo's automatic dynamic shapes do too. Length buckets bound the
compiles whatever the backend does: `train.length_bucket=N` pads T up to a multiple of N
(`streamseg.data.collate_videos`, masked like any padding; MS-TCN's losses and scores unchanged) and compiles
static graphs, one per bucket that occurs (training and evaluation each). With `train.length_bucket=0`
the module still marks T of the net's inputs dynamic (`torch._dynamo.maybe_mark_dynamic`: a model whose
ops fix T silently stays static rather than failing), one graph for backends and nets that keep T symbolic.

Cache. Inductor's FX graph cache and AOTAutograd's cache (`torch._inductor.config.fx_graph_cache`,
`torch._functorch.config.enable_autograd_cache`, both on by default in torch 2.11-2.14) keep compiled
kernels on disk, keyed by the graph, the torch version and the device; a second run of the same model
skips code generation (Triton and C++ compiles), though dynamo still traces. `train.compile_cache` says where:
"auto" = ``$XDG_CACHE_HOME/streamseg/torch_compile`` (``~/.cache`` when XDG_CACHE_HOME is unset), a folder,
or "off" (both caches disabled; inductor's scratch files then go where torch puts them,
``/tmp/torchinductor_<user>``). The folder is given to torch through ``TORCHINDUCTOR_CACHE_DIR`` (Triton's
kernels go under it unless ``TRITON_CACHE_DIR`` is set), which compile worker processes inherit.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
from torch import Tensor, nn

from ..config import ConfigError

__all__ = ["compile_net", "configure_compile_cache", "default_compile_cache_dir", "mark_time_dynamic"]

# (module, attribute) of each on-disk cache; looked up defensively, as names move between torch releases
_CACHE_SWITCHES = (("torch._inductor.config", "fx_graph_cache"), ("torch._functorch.config", "enable_autograd_cache"))


def default_compile_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/streamseg/torch_compile`` (``~/.cache`` when XDG_CACHE_HOME is unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamseg" / "torch_compile"


def configure_compile_cache(setting: str) -> Path | None:
    """Point torch's compile caches at `train.compile_cache` ("auto", a folder, or "off"); returns the folder
    (None when off). Raises ConfigError for an empty setting or a folder that is a file."""
    if not setting:
        raise ConfigError("train.compile_cache='': expected 'auto', 'off' or a folder")
    on = setting != "off"
    path = None
    if on:
        path = (default_compile_cache_dir() if setting == "auto" else Path(setting).expanduser()).resolve()
        if path.exists() and not path.is_dir():
            raise ConfigError(f"train.compile_cache={setting!r}: {path} is a file, expected a folder")
        path.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path)
    for module_name, attr in _CACHE_SWITCHES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # pragma: no cover - present in every supported torch
            continue
        if hasattr(module, attr):
            setattr(module, attr, on)
    return path


def mark_time_dynamic(*tensors: Tensor) -> None:
    """Mark the last axis (time, T) of each tensor dynamic for torch.compile (a hint, never an error)."""
    import torch._dynamo

    mark = getattr(torch._dynamo, "maybe_mark_dynamic", None) or torch._dynamo.mark_dynamic
    for t in tensors:
        mark(t, t.dim() - 1)


def compile_net(module: nn.Module, length_bucket: int, stream_batches: bool, backend: str | None = None) -> None:
    """`module.net.compile()` in place (state_dict keys unchanged) for `train.compile`: static graphs when
    whole-video batches are padded to length buckets, else T marked dynamic on every call
    (`module.dynamic_length`, read by `SegmentationModule.forward`; see the module docstring for what
    inductor makes of it). Stream batches keep one shape."""
    kwargs = {} if backend is None else {"backend": backend}
    bucketed = length_bucket > 0 and not stream_batches
    module.net.compile(dynamic=False if bucketed else None, **kwargs)
    module.dynamic_length = not bucketed and not stream_batches
