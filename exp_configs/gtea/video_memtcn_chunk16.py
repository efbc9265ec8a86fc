"""End-to-end streaming R(2+1)D-18 + MemoryTCN on gtea raw video (Videos/<vid>.mp4): 112x112 frames
(R(2+1)D's Kinetics resolution), sample rate 2 (15 -> 7.5 fps), the backbone run on 8-frame clips with
the 8 frames before each as context (16-frame windows, as the Kinetics weights were scored on), so a
prediction looks 7 sampled frames = 14 frames (~0.9 s) ahead; chunks of 16 sampled frames (2 whole clips),
gradients through the state over 2 chunks, 2 parallel streams per GPU. Start from Kinetics-400 weights
you have locally (torchvision's r2plus1d_18 state dict): -o model.weights=/path/to/r2plus1d_18.pth

    tools/run_singlenode.sh train 4 -D gtea -M video_memtcn -E chunk16 -o model.weights=...

Other backbones: -o model.backbone=s3d | swin3d_t | mvit_v2_s with 224x224 frames
(-o data.frame_size=224,224 -o model.frame_size=224,224); MViTv2-S's Kinetics weights need
context + clip_len = 16.
"""

from streamseg.config import RunParams


def configure(params: RunParams) -> None:
    params.data.input = "video"
    params.data.frame_size = (112, 112)
    params.data.sample_rate = 2
    params.model.frame_size = params.data.frame_size
    params.model.backbone = "r2plus1d_18"
    params.model.clip_len = 8
    params.model.context = 8
    params.train.chunk_size = 16  # a multiple of clip_len, so clips never straddle chunks
    params.train.tbptt_chunks = 2
    params.train.batch_size = 2  # streams per GPU
    params.train.epochs = 50
    params.train.lr = 1e-4  # a choice, not a tuned value: lower than the 2D TSM configs' 5e-4 for a larger 3D backbone
    params.train.grad_clip = 20.0
    params.train.num_workers = 4
    params.train.precision = "bf16-mixed"
