"""The static columns of docs/model_zoo.md, computed from the configs as they are now.

    python tools/zoo_table.py                          # markdown tables
    python tools/zoo_table.py --json                   # the same as JSON
    python tools/zoo_table.py --runs /tmp/zoo_runs     # + Acc/Edit/F1 and time from finished runs there

Four tables:

* synth: one row per experiment config in `exp_configs/synth/` (its model config is the longest
  `model_configs/` name its file name starts with): parameters, GFLOPs per frame, look-ahead (the
  model's `lookahead`, sampled frames; None = whole video), algorithmic latency, input. The model is built
  by the run's own path (`engine.runner.build_net`, with the synthetic dataset's class names and
  feature size; no data is read or generated) from the experiment's resolved params.
  FLOPs (multiply-add = 2) come from `deploy.bench.model_cost`, the counter `streamseg bench` uses, on
  batch 1 in eval mode: one forward of `train.chunk_size` sampled frames for chunked experiments (what a
  streaming step costs, cached context included), else of OFFLINE_FRAMES frames (a synthetic video's
  length, and exactly one C2F-TCN window of the quick configs), divided by its frames. DiffAct's count
  includes its DDIM sampling steps, ASRF's its boundary refinement.
* paper: for every `exp_configs/{gtea,50salads,breakfast}/<model>_paper.py` of a feature model, the
  parameters at 2048-d I3D input with the dataset's 11 / 19 / 48 classes, beside the official count.
* real: every experiment config of gtea / 50salads / breakfast with its key settings (resolved params).
* encoders: every video backbone of `model_configs/video_memtcn.py` at its variant function's defaults
  (the clip its Kinetics weights were trained on): parameters (classifier dropped), window = context +
  clip_len frames, GFLOPs per frame (one clip's window / clip_len, context included: what streaming costs)
  and GMACs per window (one backbone pass, the unit papers publish), beside the published figures where
  they are known. Counted on the meta device (shapes only, no arithmetic), so it costs no compute.

`--runs ROOT` adds, per synth row, the newest finished run `ROOT/synth/<model>_<exp>/version_*/`
(the one with `DONE`): test Acc, Edit, F1@{10,25,50} and `train_seconds` from its `metrics.json`
("unfinished" when there are only runs without `DONE`: stopped, or still running).

Cheap: every model is built and run once (~half a minute on one CPU thread); nothing is trained.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from streamseg.config import ConfigError, RunParams, load_configs, resolve_params
from streamseg.config.loader import import_file
from streamseg.data.synth import CLASSES as SYNTH_CLASSES
from streamseg.deploy.bench import model_cost
from streamseg.engine.datamodule import DatasetInfo
from streamseg.engine.batches import BatchKind
from streamseg.engine.runner import batch_kind, build_net, latency_frames
from streamseg.flops import count_params

REPO = Path(__file__).resolve().parents[1]
OFFLINE_FRAMES = 384  # synthetic videos: 200-600 frames; C2F-TCN quick: one window of 384
I3D_CHANNELS = 2048
PAPER_CLASSES = {"gtea": 11, "50salads": 19, "breakfast": 48}
REAL_DATASETS = ("gtea", "50salads", "breakfast")

# The official implementations' counts at 2048-d input (issue #5, /work/shared/notes/tas-reference.md §2);
# tests/models/test_zoo_params.py and test_diffact.py assert ours equal them.
OFFICIAL_PARAMS: dict[tuple[str, str], int] = {
    ("mstcn", "gtea"): 796_780, ("mstcn", "50salads"): 800_396, ("mstcn", "breakfast"): 813_504,
    ("mstcn2", "gtea"): 994_220, ("mstcn2", "50salads"): 997_836, ("mstcn2", "breakfast"): 1_010_944,
    ("asformer", "gtea"): 1_130_860, ("asformer", "50salads"): 1_134_476, ("asformer", "breakfast"): 1_147_584,
    ("asrf", "gtea"): 1_292_784, ("asrf", "50salads"): 1_296_400, ("asrf", "breakfast"): 1_309_508,
    ("c2ftcn", "gtea"): 6_740_937, ("c2ftcn", "50salads"): 6_747_129, ("c2ftcn", "breakfast"): 6_769_575,
    ("diffact", "gtea"): 1_204_438, ("diffact", "50salads"): 1_214_566, ("diffact", "breakfast"): 11_912_800,
}

PAPERS = {
    "mstcn": "MS-TCN (Farha & Gall, CVPR'19)",
    "mstcn2": "MS-TCN++ (Li et al., TPAMI'20)",
    "asformer": "ASFormer (Yi et al., BMVC'21)",
    "asrf": "ASRF (Ishikawa et al., WACV'21)",
    "c2ftcn": "C2F-TCN (Singhania et al., 2021)",
    "diffact": "DiffAct (Liu et al., ICCV'23)",
    "framewise": "per-frame MLP baseline",
    "memtcn": "memory TCN: causal MS-TCN (SVTAS, arXiv 2209.13808)",
    "mobilenet_framewise": "MobileNetV2 per frame (baseline)",
    "tsm_memtcn": "TSM (Lin et al., ICCV'19) + memory TCN (SVTAS)",
    "transeger": "Transeger (SVTAS, arXiv 2209.13808)",
    "video_memtcn": "R(2+1)D-18 (Tran et al., CVPR'18) clips + memory TCN",
}


def model_names(repo: Path = REPO) -> list[str]:
    """Model config names, longest first (names may prefix each other: mstcn, mstcn2)."""
    names = [p.stem for p in (repo / "model_configs").glob("*.py") if not p.name.startswith("_")]
    return sorted(names, key=len, reverse=True)


def split_exp(path: Path, models: list[str]) -> tuple[str, str]:
    """`exp_configs/<dataset>/<model>_<exp>.py` -> (model, exp)."""
    model = next((m for m in models if path.stem.startswith(m + "_")), None)
    if model is None:
        raise ValueError(f"{path}: the name must be <model>_<exp>.py with <model> one of {sorted(models)}")
    return model, path.stem[len(model) + 1 :]


def experiments(dataset: str, repo: Path = REPO) -> list[tuple[str, str]]:
    """(model, exp) of every experiment config of `dataset`, sorted."""
    models = model_names(repo)
    paths = sorted(p for p in (repo / "exp_configs" / dataset).glob("*.py") if not p.name.startswith("_"))
    return [split_exp(p, models) for p in paths]


def fmt_gflops(flops_per_frame: float) -> str:
    """GFLOPs with 3 significant digits, never in exponent notation (the doc's and the test's format)."""
    return np.format_float_positional(flops_per_frame / 1e9, precision=3, unique=False, fractional=False, trim="-")


def fmt_lookahead(lookahead: int | None) -> str:
    return "whole video" if lookahead is None else str(lookahead)


def build_synth(model: str, exp: str, repo: Path = REPO) -> tuple[nn.Module, RunParams, DatasetInfo]:
    """(network, resolved params, dataset info) of a synth experiment, the network built as a run builds
    it (`build_net`), with the synthetic dataset's class names and input channels (no data is read)."""
    configs = load_configs("synth", model, exp, repo)
    params, _ = resolve_params(configs)
    kind = batch_kind(configs, params)
    in_channels = 3 if kind is BatchKind.STREAMS else int(params.data.feature_dim)  # as the DataModules report it
    info = DatasetInfo("synth", list(SYNTH_CLASSES), [SYNTH_CLASSES.index(b) for b in params.data.bg_classes],
                       in_channels, float(params.data.fps), int(params.data.sample_rate), batch_kind=kind)
    torch.manual_seed(0)
    return build_net(configs.model, params.model, info), params, info


def synth_row(model: str, exp: str, repo: Path = REPO,
              built: tuple[nn.Module, RunParams, DatasetInfo] | None = None) -> dict[str, Any]:
    """The static columns of one synth experiment (see the module docstring); ``built``: its
    `build_synth` result, if already at hand."""
    net, params, info = built if built is not None else build_synth(model, exp, repo)
    frames_input = info.streams
    chunk = int(params.train.chunk_size)
    sample_shape = (3, *params.data.frame_size) if frames_input else (info.in_channels,)
    frames = chunk if chunk > 0 else OFFLINE_FRAMES
    cost = model_cost(net, sample_shape, frames)
    lookahead = net.lookahead
    latency = latency_frames(lookahead, chunk, info.sample_rate)  # as runner.latency: None = whole video
    return {
        "model": model, "exp": exp, "paper": PAPERS.get(model, "-"),
        "command": f"streamseg train -D synth -M {model} -E {exp}",
        "params": count_params(net), "flops_per_frame": cost["flops_per_frame"], "flops_frames": frames,
        "gflops_per_frame": fmt_gflops(cost["flops_per_frame"]),
        "lookahead": lookahead, "chunk_size": chunk, "latency_frames": latency,
        "input": "frames" if frames_input else "features",
        "sample_shape": list(sample_shape), "sample_rate": info.sample_rate, "num_classes": info.num_classes,
    }


def row_order(row: dict[str, Any]) -> tuple:
    """Offline feature models, then streaming feature models, then models on frames; by name within."""
    return (row["input"] == "frames", row["latency_frames"] is not None, row["model"], row["exp"])


def paper_rows(repo: Path = REPO) -> list[dict[str, Any]]:
    """Parameters of every feature model's `<dataset>/<model>_paper.py` at 2048-d input."""
    rows = []
    for dataset in REAL_DATASETS:
        for model, exp in experiments(dataset, repo):
            if exp != "paper":
                continue
            configs = load_configs(dataset, model, exp, repo)
            params, _ = resolve_params(configs)
            if batch_kind(configs, params) is BatchKind.STREAMS:
                continue
            net = configs.model.build_model(params.model, I3D_CHANNELS, PAPER_CLASSES[dataset])
            rows.append({"model": model, "dataset": dataset, "num_classes": PAPER_CLASSES[dataset],
                         "params": count_params(net), "official": OFFICIAL_PARAMS.get((model, dataset)),
                         "lookahead": net.lookahead})
    return rows


def real_rows(repo: Path = REPO) -> list[dict[str, Any]]:
    """Key settings of every experiment config of the real datasets, from the resolved params."""
    rows = []
    for dataset in REAL_DATASETS:
        for model, exp in experiments(dataset, repo):
            configs = load_configs(dataset, model, exp, repo)
            params, _ = resolve_params(configs)
            d, t = params.data, params.train
            video = batch_kind(configs, params) is BatchKind.STREAMS
            rows.append({
                "dataset": dataset, "model": model, "exp": exp,
                "input": f"frames {d.frame_size[0]}x{d.frame_size[1]}" if video else "features",
                "sample_rate": d.sample_rate, "lr": t.lr, "weight_decay": t.weight_decay, "epochs": t.epochs,
                "batch_size": t.batch_size, "chunk_size": t.chunk_size, "bg_classes": list(d.bg_classes),
                "command": f"streamseg train -D {dataset} -M {model} -E {exp}",
            })
    return rows


def measured(root: Path, model: str, exp: str) -> dict[str, Any] | None:
    """metrics.json of the newest finished version of `root/synth/<model>_<exp>/`; ``{"unfinished": path}``
    when there are only unfinished versions (stopped, or still running); None without any."""
    versions = sorted((root / "synth" / f"{model}_{exp}").glob("version_*"), key=lambda p: int(p.name.split("_")[-1]))
    for v in reversed(versions):
        if (v / "DONE").is_file() and (v / "metrics.json").is_file():
            m = json.loads((v / "metrics.json").read_text())
            return {k: m.get(k) for k in ("acc", "edit", "f1@10", "f1@25", "f1@50", "train_seconds", "latency")} | {
                "run": str(v)}
    return {"unfinished": str(versions[-1])} if versions else None


# ------------------------------------------------------------------------------------------------ output


def _int(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def fmt_input(row: dict[str, Any]) -> str:
    shape = row["sample_shape"]
    kind = f"frames {shape[0]}x{shape[1]}x{shape[2]}" if row["input"] == "frames" else f"features {shape[0]}-d"
    return kind + (f", sr {row['sample_rate']}" if row["sample_rate"] != 1 else "")


def fmt_latency(row: dict[str, Any]) -> str:
    if row["latency_frames"] is None:
        return "whole video"
    return f"{row['latency_frames']} fr (chunk {row['chunk_size']})"


def _pct(m: dict[str, Any] | None, key: str) -> str:
    return "-" if m is None or m.get(key) is None else f"{m[key]:.1f}"


SYNTH_COLUMNS = ("model", "exp", "paper", "params", "GFLOPs/frame", "look-ahead", "latency", "input",
                 "Acc", "Edit", "F1@10", "F1@25", "F1@50", "time", "command")


def synth_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(SYNTH_COLUMNS) + " |", "|" + "---|" * len(SYNTH_COLUMNS)]
    for r in rows:
        m = r.get("measured")
        time_s = "-" if m is None or m.get("train_seconds") is None else f"{m['train_seconds']:.0f} s"
        if m is not None and "unfinished" in m:
            time_s = "unfinished"
        cells = [f"`{r['model']}`", f"`{r['exp']}`", r["paper"], _int(r["params"]), r["gflops_per_frame"],
                 fmt_lookahead(r["lookahead"]), fmt_latency(r), fmt_input(r),
                 *(_pct(m, k) for k in ("acc", "edit", "f1@10", "f1@25", "f1@50")), time_s, f"`{r['command']}`"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paper_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | dataset (classes) | params at 2048-d | official code |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{r['model']}` | {r['dataset']} ({r['num_classes']}) | {_int(r['params'])} | "
                     f"{_int(r['official'])} |")
    return "\n".join(lines)


def real_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| dataset | model | exp | input | sample rate | lr | weight decay | epochs | batch | chunk |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | `{r['model']}` | `{r['exp']}` | {r['input']} | {r['sample_rate']} | "
                     f"{r['lr']:g} | {r['weight_decay']:g} | {r['epochs']} | {r['batch_size']} | "
                     f"{r['chunk_size'] or '-'} |")
    return "\n".join(lines)


ENCODER_PAPERS = {
    "r2plus1d_18": "R(2+1)D-18 (Tran et al., CVPR'18)",
    "s3d": "S3D (Xie et al., ECCV'18)",
    "mvit_v2_s": "MViTv2-S (Li et al., CVPR'22)",
    "swin3d_t": "Video Swin-T (Liu et al., CVPR'22)",
    "x3d_xs": "X3D-XS (Feichtenhofer, CVPR'20)",
    "x3d_s": "X3D-S (Feichtenhofer, CVPR'20)",
    "x3d_m": "X3D-M (Feichtenhofer, CVPR'20)",
    "slowfast_r50": "SlowFast R50 8x8 (Feichtenhofer et al., ICCV'19)",
}
# Published (parameters in M with the Kinetics-400 classifier, GMACs per view, the view): PySlowFast
# MODEL_ZOO.md (X3D GFLOPs, counted as multiply-adds) and PyTorchVideo's model zoo (3.79 M; SlowFast R50 8x8
# 34.57 M, 65.71 G at its 256 x 256 test crop); tests/models/test_pyslowfast.py checks the counts.
PUBLISHED_ENCODERS: dict[str, tuple[float, float, str]] = {
    "x3d_xs": (3.79, 0.60, "4x160x160"), "x3d_s": (3.79, 1.96, "13x160x160"), "x3d_m": (3.79, 4.73, "16x224x224"),
    "slowfast_r50": (34.57, 65.71, "32x256x256"),
}


def encoder_rows(repo: Path = REPO) -> list[dict[str, Any]]:
    """The encoders table (module docstring), one row per backbone of `video_memtcn`."""
    config = import_file(repo / "model_configs" / "video_memtcn.py", "_zoo_table_video_memtcn")
    rows = []
    for name, build in config.ENCODERS.items():
        with torch.device("meta"):
            encoder = build()
        cost = model_cost(encoder, (3, *encoder.frame_size), encoder.clip_len)  # one clip = one window
        published = PUBLISHED_ENCODERS.get(name)
        rows.append({
            "backbone": name, "paper": ENCODER_PAPERS.get(name, "-"), "params": count_params(encoder),
            "window": encoder.context + encoder.clip_len, "clip_len": encoder.clip_len,
            "frame_size": list(encoder.frame_size), "lookahead": encoder.lookahead,
            "flops_per_frame": cost["flops_per_frame"], "gflops_per_frame": fmt_gflops(cost["flops_per_frame"]),
            "gmacs_per_window": f"{cost['flops_per_forward'] / 2e9:.2f}",
            "published": None if published is None else f"{published[0]} M, {published[1]:.2f} G at {published[2]}",
        })
    return rows


def encoders_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| backbone | paper | params | window x frame | GFLOPs/frame | GMACs/window | look-ahead | published |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        h, w = r["frame_size"]
        lines.append(f"| `{r['backbone']}` | {r['paper']} | {_int(r['params'])} | {r['window']}x{h}x{w} "
                     f"(clip {r['clip_len']}) | {r['gflops_per_frame']} | {r['gmacs_per_window']} | {r['lookahead']} | "
                     f"{r['published'] or '-'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print JSON instead of markdown")
    p.add_argument("--runs", default=None, help="an experiments root (-R) with finished synth runs to read")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the FLOP count (default 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.runs is not None and not Path(args.runs).is_dir():
        raise SystemExit(f"error: --runs {args.runs}: no such directory")
    try:
        synth = sorted((synth_row(m, e) for m, e in experiments("synth")), key=row_order)
        paper, real, encoders = paper_rows(), real_rows(), encoder_rows()
    except (ValueError, ConfigError) as e:
        raise SystemExit(f"error: {e}") from None
    if args.runs is not None:
        root = Path(args.runs)
        for r in synth:
            r["measured"] = measured(root, r["model"], r["exp"])
    if args.json:
        json.dump({"synth": synth, "paper": paper, "real": real, "encoders": encoders}, sys.stdout, indent=2)
        print()
    else:
        print(synth_markdown(synth), paper_markdown(paper), real_markdown(real), encoders_markdown(encoders),
              sep="\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
