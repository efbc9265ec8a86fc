"""Mixed-precision INT8: which nodes stay in float, chosen from the calibration videos alone.

Quantising a whole streaming step flips the labels of frames where the model's two best classes are
close. `choose_float_nodes` leaves the fewest nodes in float that bring the label agreement with the fp32
graph to ``min_agreement``, measured on the calibration videos only (never on the videos the INT8 graph
is later checked on):

1. Cross-fitted agreement of a set F of float nodes: the calibration videos are split into ``folds``
   (video i in fold i % folds); each video's window (`calibration_videos`) is run chunk by chunk from
   the state fp32 carried to its start, then its own state carried as `infer` runs it, through a graph
   calibrated on the OTHER folds' chunks with F in float; the agreement is the
   fraction of all their sampled frames labelled as the fp32 graph labels them. Every frame is scored by
   a graph whose activation ranges did not see it.
2. The plain graph (F = `Int8Options.float_prefixes`' nodes) reaching ``min_agreement`` is kept as is.
3. Sensitivity, one node at a time: for each node ONNX Runtime would quantise, the graph with that node
   alone added to F, calibrated on all but fold 0 and run over fold 0: how much it lowers the mean
   squared difference of the logits from fp32's. The nodes are ranked by that gain, largest first, ties
   (a node whose output stays quantised for a quantised neighbour gains nothing alone) nearest the
   output first; with all of them in float the graph is the fp32 one, so some k always reaches it.
4. Search along that ranking: the first k ranked nodes in float for k = 1, 2, 4, ... until the
   cross-fitted agreement reaches ``min_agreement``, then the smallest such k by bisection between the
   last k that fell short and it. If none reaches it, the set with the best agreement is kept and the
   report says ``"reached": false``.

The report (`Int8Search`) goes into the INT8 metadata's ``int8_search``: the float nodes, their
cross-fitted agreement, every tried k.
"""

from __future__ import annotations

import tempfile
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .quantize import Int8Options, calibration_steps, prepare_graph, quantize_prepared
from .runtime import OnnxStreamer

__all__ = ["CalibVideo", "Int8Search", "calibration_videos", "check_min_agreement", "choose_float_nodes"]


@dataclass
class CalibVideo:
    """One calibration video's window of consecutive chunks as the fp32 graph runs them: ``feeds``, the
    graph inputs of each chunk (x and the fp32 state carried from the video's start), and ``logits``
    (K, T), the fp32 graph's over the window's sampled frames."""

    feeds: list[dict[str, np.ndarray]]
    logits: np.ndarray


@dataclass
class Int8Search:
    """What `choose_float_nodes` chose: ``float_nodes`` beyond the ``base`` ones (``float_prefixes``),
    their cross-fitted ``agreement`` on ``frames`` sampled frames of the calibration videos, whether it
    reached ``min_agreement``, and each tried number of ranked nodes in float with its agreement."""

    min_agreement: float
    folds: int
    frames: int
    base: list[str]
    float_nodes: list[str] = field(default_factory=list)
    agreement: float = 0.0
    reached: bool = False
    ranked: list[str] = field(default_factory=list)
    tried: dict[int, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["tried"] = {str(k): v for k, v in sorted(self.tried.items())}
        return out


def calibration_videos(fp32: OnnxStreamer, videos: Sequence[str | Path], chunk: int,
                       max_chunks: int = 64) -> list[CalibVideo]:
    """A window of ``ceil(max_chunks / len(videos))`` consecutive chunks of each video as the fp32 graph
    runs it, its state carried from the video's start, the windows staggered over the videos: video ``v``
    of ``V`` starts its window at the fraction ``(v + 1/2) / V`` of the chunks before its last window
    (from the header's frame count; a video that ends sooner gives its last chunks). So up to
    ``len(videos) - 1`` more than ``max_chunks`` in all.

    Why staggered: each video's first chunks start from the zero state, so calibrated on them alone every
    activation the state feeds gets ranges that later chunks exceed. On a trained 224x224 TSM-MobileNetV2 +
    MemoryTCN, one chunk from each of 8 videos, the first chunks gave 99.02 % label agreement with fp32
    (21 flips of 2,142 frames, one with an fp32 margin of 0.85) and staggered ones 99.86 % (3 flips, all
    near-ties) (docs/benchmarks.md, "Ninth session" under "Trained on a GPU")."""
    from ..data.video import probe

    per_video = -(-max_chunks // max(len(videos), 1))
    out = []
    for v, video in enumerate(videos):
        total = -(-(-(-probe(video)[0] // fp32.meta.sample_rate)) // chunk)  # chunks of sampled frames
        start = int((v + 0.5) / len(videos) * max(total - per_video, 0))
        # the fp32 graph runs every chunk up to the window's end; the deque keeps the window's
        window = deque(calibration_steps(fp32, [video], chunk, start + per_video), maxlen=per_video)
        if window:
            out.append(CalibVideo([feed for feed, _ in window], np.concatenate([lg[0] for _, lg in window], axis=-1)))
    return out


def check_min_agreement(value: float) -> float:
    """``value`` if it is a fraction in [0, 1], else a ValueError naming it."""
    if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0 or value != value:
        raise ValueError(f"min_agreement: expected a fraction of frames in [0, 1] (e.g. 0.99), got {value!r}")
    return float(value)


def choose_float_nodes(onnx_path: str | Path, videos: Sequence[CalibVideo], state_names: Sequence[str],
                       min_agreement: float = 0.99, options: Int8Options = Int8Options(),
                       folds: int = 2) -> Int8Search:
    """The nodes of `prepare_graph`'s graph of ``onnx_path`` to leave in float (module docstring), from
    the calibration ``videos`` (at least ``folds`` of them); ``state_names``: the graph's state inputs."""
    min_agreement = check_min_agreement(min_agreement)
    if folds < 2:
        raise ValueError(f"folds: expected at least 2 (each video scored by a graph calibrated on others), got {folds}")
    if len(videos) < folds:
        raise ValueError(f"choosing float nodes needs at least {folds} calibration videos "
                         f"(cross-fitted agreement), got {len(videos)}")
    with tempfile.TemporaryDirectory(prefix="streamseg-int8-search-") as tmp:
        src, base = prepare_graph(onnx_path, Path(tmp), options)
        trial = _Trials(src, Path(tmp), videos, list(state_names), options, base, folds)
        report = Int8Search(min_agreement, folds, trial.frames, base)
        report.tried[0] = trial.agreement([])
        if report.tried[0] < min_agreement:
            report.ranked = trial.ranking(_candidates(src, base, options))
            _search(report, trial)
        k = _best(report)
        report.float_nodes, report.agreement = report.ranked[:k], report.tried[k]
        report.reached = report.agreement >= min_agreement
    return report


def _search(report: Int8Search, trial: _Trials) -> None:
    """Doubling then bisection over k, the number of ranked nodes in float (the module docstring, 4)."""
    n = len(report.ranked)
    if n == 0:
        return
    low, k = 0, 1  # low: the largest k known to fall short (0: the plain graph)
    while True:
        report.tried[k] = trial.agreement(report.ranked[:k])
        if report.tried[k] >= report.min_agreement:
            break
        if k == n:
            return
        low, k = k, min(2 * k, n)
    high = k
    while high - low > 1:
        mid = (low + high) // 2
        report.tried[mid] = trial.agreement(report.ranked[:mid])
        low, high = (low, mid) if report.tried[mid] >= report.min_agreement else (mid, high)


def _best(report: Int8Search) -> int:
    """The fewest float nodes that reached the threshold, else those with the best agreement."""
    passing = [k for k, a in report.tried.items() if a >= report.min_agreement]
    if passing:
        return min(passing)
    return max(report.tried, key=lambda k: (report.tried[k], -k))


def _candidates(src: Path, base: Sequence[str], options: Int8Options) -> list[str]:
    """The nodes of ``src`` that ONNX Runtime would quantise (its QDQ and QOperator registries, or
    ``options.op_types``), less ``base`` and those whose outputs shape inference found not float (shape
    arithmetic on int64: never quantised, so leaving them in float changes nothing)."""
    import onnx
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    graph = onnx.load(str(src)).graph
    elem = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    types = set(options.op_types) if options.op_types else set(QDQRegistry) | set(QLinearOpsRegistry)
    skip = set(base)
    return [n.name for n in graph.node if n.op_type in types and n.name not in skip
            and not all(elem.get(o, onnx.TensorProto.FLOAT) != onnx.TensorProto.FLOAT for o in n.output)]


class _Trials:
    """Quantises `prepare_graph`'s graph with given float nodes and scores it on the calibration videos."""

    def __init__(self, src: Path, tmp: Path, videos: Sequence[CalibVideo], state_names: list[str],
                 options: Int8Options, base: list[str], folds: int) -> None:
        self.src, self.tmp, self.videos, self.state_names = src, tmp, videos, state_names
        self.options, self.base, self.folds = options, base, folds
        self.frames = sum(v.logits.shape[-1] for v in videos)

    def _graph(self, fold: int, float_nodes: Sequence[str]):
        """An ONNX Runtime session of the graph calibrated on every fold but ``fold``."""
        import onnxruntime as ort

        feeds = [f for i, v in enumerate(self.videos) if i % self.folds != fold for f in v.feeds]
        out = quantize_prepared(self.src, self.tmp / "trial.onnx", feeds, self.options, [*self.base, *float_nodes],
                                ranges=self.tmp / f"ranges_{fold}.json")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        return ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])

    def _run(self, session, video: CalibVideo) -> np.ndarray:
        """(K, T) logits of ``video``'s window chunk by chunk: from the state fp32 carried to its first
        chunk, then the graph's own state carried."""
        state = [video.feeds[0][name] for name in self.state_names]
        logits = []
        for feed in video.feeds:
            out, *state = session.run(None, {"x": feed["x"], **dict(zip(self.state_names, state))})
            logits.append(out[0])
        return np.concatenate(logits, axis=-1)

    def agreement(self, float_nodes: Sequence[str]) -> float:
        same = 0
        for fold in range(self.folds):
            session = self._graph(fold, float_nodes)
            for v in self.videos[fold::self.folds]:
                same += int((self._run(session, v).argmax(0) == v.logits.argmax(0)).sum())
        return round(same / self.frames, 6)

    def logit_error(self, float_nodes: Sequence[str]) -> float:
        """Mean squared logit difference from fp32 over fold 0, the graph calibrated on the others."""
        session = self._graph(0, float_nodes)
        fold = self.videos[0::self.folds]
        return float(np.mean(np.concatenate([((self._run(session, v) - v.logits) ** 2).mean(0) for v in fold])))

    def ranking(self, candidates: Sequence[str]) -> list[str]:
        """``candidates`` (in graph order) by how much they lower `logit_error` when left in float alone,
        largest gain first, equal gains the later node first."""
        plain = self.logit_error([])
        gains = [(plain - self.logit_error([c]), i, c) for i, c in enumerate(candidates)]
        return [c for _, _, c in sorted(gains, key=lambda g: (-g[0], -g[1]))]
