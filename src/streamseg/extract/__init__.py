"""Feature extraction: videos -> per-frame feature files (``features/<video>.npy``, ``(D, T)``) for the
offline models. See docs/extract.md; `streamseg extract` is the command line."""

from .encoders import CLIP_MODELS, IMAGE_MODELS, EncoderSpec, build_encoder, flow_encoder
from .flow import RAFT_MODELS, FlowSpec, RaftFlow
from .run import MANIFEST, ExtractReport, extract_features, list_videos, manifest_spec, shard

__all__ = [
    "CLIP_MODELS",
    "IMAGE_MODELS",
    "MANIFEST",
    "RAFT_MODELS",
    "EncoderSpec",
    "ExtractReport",
    "FlowSpec",
    "RaftFlow",
    "build_encoder",
    "extract_features",
    "flow_encoder",
    "list_videos",
    "manifest_spec",
    "shard",
]
