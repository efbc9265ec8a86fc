#!/usr/bin/env bash
# A trained full-encoder TSM-MobileNetV2 + MemoryTCN at 224x224 for the INT8 comparison (issue #21 part 6):
# trained on a GPU machine in a few minutes, exported as fp32 ONNX, then quantised and timed on the CPU
# with tools/bench_int8.py. Random weights at this size give INT8 2.1-2.3x fp32 (docs/benchmarks.md,
# "Larger frame sizes"); this measures the label agreement of a trained model of that architecture.
#
# 1. GPU machine, from the repository root (about 4 minutes; needs torch with CUDA, onnx, onnxruntime):
#
#      OUT=/some/dir PYTHONPATH=src bash tools/int8_trained_gpu.sh
#
#    writes the synthetic videos (`streamseg data synth`: 40 glyph videos of 200-600 frames rendered at
#    224x224, seed 0, 24 train / 6 val / 10 test), trains `-D synth -M tsm_memtcn -E chunk32` with the
#    full MobileNetV2 (model.num_blocks unset: all 19 blocks) at data/model frame_size 224x224, bf16, 12
#    decode workers (frames augmented on the GPU: data.preprocess=device-i420; PREPROCESS=cpu to do it in
#    the workers), at most EPOCHS epochs and at most TRAIN_SECONDS of wall clock (then SIGINT:
#    Lightning stops and best.ckpt, written atomically at each validation, is kept; the decode workers
#    get the SIGINT too, so a KeyboardInterrupt / "DataLoader worker exited unexpectedly" traceback is
#    expected then), scores best.ckpt on the test split (`streamseg test` when the limit stopped it),
#    exports fp32 ONNX and copies to $OUT (flat, each file < 16 MiB):
#      model.onnx, model.json      the fp32 export and its metadata
#      metrics.json                test-split scores of best.ckpt (acc, edit, f1@...)
#      run.tar.gz                  the run's config/ (parameters, overrides) and logs/csv/metrics.csv
#                                  (validation scores per epoch)
#      train.log                   the last 200 lines of the training output
#      videos_test.tar             the test split's videos, with the dataset's labels, splits and manifest
#      videos_calib.tar            the first 12 train-split videos (calibration)
#      summary.txt                 what ran, how long, the test accuracy
#    and prints the test accuracy ("TEST ACC ...").
#
# 2. This CPU, afterwards (OUT = the folder the GPU files were fetched to):
#
#      OUT=/fetched/dir PYTHONPATH=src nice -n 10 bash tools/int8_trained_gpu.sh check
#
#    regenerates the same dataset here (same spec and seed: byte-identical labels, and the same videos
#    with the same FFmpeg build), puts the GPU machine's videos from videos_*.tar in their place (saying
#    for each whether it differed from the regenerated one), makes folders of links to the train split
#    (calibration) and test split (check), and runs
#      python tools/bench_int8.py --onnx $OUT/model.onnx --calib CALIB --check CHECK --gt GT \
#          --calib-chunks $CALIB_CHUNKS --sessions all-t2 all-t1 --rounds 5 --steps 3 --margins \
#          --variants $VARIANTS --work $WORK/bench --out $WORK/bench_int8.json
#    (VARIANTS default "default"; "default auto" adds the float-node search of `export onnx --int8`:
#    two extra quantisations when the plain graph already reaches 0.99 on the calibration videos, else
#    one per candidate node, which at this size is far too slow for this CPU). About 5
#    minutes here and ~10 GB peak memory (estimates from the tiny and random-weight runs at 224x224).
#    CALIB = links to the first CALIB_VIDEOS (default 8) train-split videos, CALIB_CHUNKS (default
#    CALIB_VIDEOS) = one chunk of 32 sampled frames from each (bench_int8 takes ceil(chunks / videos)
#    from every video). Memory: with the full encoder at 224x224 bench_int8's peak RSS was 3.2 GB at 1
#    calibration chunk and 5.1 GB at 4 (random weights), but the calibration is not what grew: ONNX
#    Runtime's MinMax calibrator keeps only each chunk's per-tensor minima and maxima (the ReduceMin /
#    ReduceMax outputs it adds), and `quantize_int8` alone peaked at 4.9 GB with 8 chunks and with 16
#    (ninth session, the trained model); what else grew in bench_int8 was not investigated.
#
# Tiny scale (check the whole flow on a CPU in a couple of minutes: 6 videos of 60-80 frames at 32x32,
# 1 epoch, fp32, no workers; the full encoder all the same):
#
#      TINY=1 OUT=/tmp/o PYTHONPATH=src nice -n 10 bash tools/int8_trained_gpu.sh
#      TINY=1 OUT=/tmp/o PYTHONPATH=src nice -n 10 bash tools/int8_trained_gpu.sh check
#
# CPU scale (a short training of the same model, full encoder at 224x224, on this CPU instead of the
# GPU recipe: 24 videos of 60-64 frames (one chunk of 32 sampled frames each), fp32, no workers, 1
# stream a step (BATCH; the recipe's 4 took over 20 GB here and were killed), at most 5 epochs and
# 840 s (about 14 minutes of training at load 3; its result in docs/benchmarks.md); check with 4
# calibration videos, 3 rounds (about 3 minutes, 9.4 GB peak). MIN_FRAMES / MAX_FRAMES / ROUNDS can
# be set; give both calls the same CPU=1 and knobs, so that `check` regenerates the same dataset):
#
#      CPU=1 OUT=/tmp/o PYTHONPATH=src nice -n 10 bash tools/int8_trained_gpu.sh
#      CPU=1 OUT=/tmp/o PYTHONPATH=src nice -n 10 bash tools/int8_trained_gpu.sh check
#
# Environment: OUT (required), WORK (scratch, default /tmp/int8_trained), PYTHON (default python3),
# TINY, CPU, BATCH (CPU only), EPOCHS (default 40), TRAIN_SECONDS (default 140), SIZE (frame and video
# side, default 224), NUM_VIDEOS (40), WORKERS (12), PREPROCESS (device-i420), CALIB_VIDEOS, CALIB_CHUNKS,
# VARIANTS.
set -euo pipefail
: "${OUT:?set OUT to the output folder}"
MODE=${1:-gpu}
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/int8_trained}
TRAIN_EXTRA=()  # more `train` overrides
if [ "${TINY:-0}" = 1 ]; then
  SIZE=${SIZE:-32}; NUM_VIDEOS=${NUM_VIDEOS:-6}; MIN_FRAMES=60; MAX_FRAMES=80; EPOCHS=${EPOCHS:-1}
  ACCEL=cpu; PRECISION=32-true; WORKERS=${WORKERS:-0}; TRAIN_SECONDS=${TRAIN_SECONDS:-600}
  PREPROCESS=${PREPROCESS:-cpu}
  CALIB_VIDEOS=${CALIB_VIDEOS:-4}; ROUNDS=1
elif [ "${CPU:-0}" = 1 ]; then  # a short training of the full encoder at 224x224 on this CPU
  SIZE=${SIZE:-224}; NUM_VIDEOS=${NUM_VIDEOS:-24}; MIN_FRAMES=${MIN_FRAMES:-60}; MAX_FRAMES=${MAX_FRAMES:-64}
  EPOCHS=${EPOCHS:-5}; ACCEL=cpu; PRECISION=32-true; WORKERS=${WORKERS:-0}
  TRAIN_SECONDS=${TRAIN_SECONDS:-840}; PREPROCESS=${PREPROCESS:-cpu}
  CALIB_VIDEOS=${CALIB_VIDEOS:-4}; ROUNDS=${ROUNDS:-3}
  TRAIN_EXTRA=(-o train.batch_size="${BATCH:-1}")  # 4 streams of 2x32 frames at 224x224 took > 20 GB here
else
  SIZE=${SIZE:-224}; NUM_VIDEOS=${NUM_VIDEOS:-40}; MIN_FRAMES=200; MAX_FRAMES=600; EPOCHS=${EPOCHS:-40}
  ACCEL=gpu; PRECISION=bf16-mixed; WORKERS=${WORKERS:-12}; TRAIN_SECONDS=${TRAIN_SECONDS:-140}
  PREPROCESS=${PREPROCESS:-device-i420}
  CALIB_VIDEOS=${CALIB_VIDEOS:-8}; ROUNDS=5
fi
DATA=$WORK/synth$SIZE
RUNS=$WORK/runs
# the dataset spec, identical for `data synth`, `train` (its `ensure` finds the videos matching) and `check`
SPEC=(-o data.root="$DATA" -o data.num_videos="$NUM_VIDEOS" -o data.synth_seed=0 -o data.height="$SIZE"
      -o data.width="$SIZE" -o data.min_frames=$MIN_FRAMES -o data.max_frames=$MAX_FRAMES)
synth() {
  "$PY" -m streamseg.cli.main data synth --root "$DATA" --num-videos "$NUM_VIDEOS" --seed 0 --size "${SIZE}x${SIZE}" \
    --min-frames $MIN_FRAMES --max-frames $MAX_FRAMES --jobs "$(nproc)"
}
mkdir -p "$OUT" "$WORK"

if [ "$MODE" = check ]; then
  rm -rf "$DATA"; synth  # the same spec and seed: the labels byte-identical, the videos too with the same FFmpeg build
  for t in "$OUT"/videos_test.tar "$OUT"/videos_calib.tar; do  # the GPU machine's own files replace them
    [ -f "$t" ] || { echo "no $t: the regenerated videos stand in" >&2; continue; }
    rm -rf "$WORK/shipped" && mkdir -p "$WORK/shipped" && tar -xf "$t" -C "$WORK/shipped"
    for f in $(cd "$WORK/shipped" && find . -type f | sort); do
      cmp -s "$WORK/shipped/$f" "$DATA/$f" && same=identical || same=DIFFERENT
      echo "$(basename "$t"): $f $same to the regenerated one"
      cp "$WORK/shipped/$f" "$DATA/$f"
    done
  done
  rm -rf "$WORK/calib" "$WORK/check" && mkdir -p "$WORK/calib" "$WORK/check"
  # the split files list the activities round-robin: the first CALIB_VIDEOS cover all four
  for n in $(sed 's/\.txt$//' "$DATA/splits/train.split1.bundle" | head -n "$CALIB_VIDEOS"); do
    ln -s "$DATA/Videos/$n.mp4" "$WORK/calib/"
  done
  for n in $(sed 's/\.txt$//' "$DATA/splits/test.split1.bundle"); do ln -s "$DATA/Videos/$n.mp4" "$WORK/check/"; done
  # shellcheck disable=SC2086  # VARIANTS is a list of names
  "$PY" tools/bench_int8.py --onnx "$OUT/model.onnx" --calib "$WORK/calib" --check "$WORK/check" \
    --gt "$DATA/groundTruth" --calib-chunks "${CALIB_CHUNKS:-$CALIB_VIDEOS}" --sessions all-t2 all-t1 \
    --rounds $ROUNDS --steps 3 --margins --variants ${VARIANTS:-default} --work "$WORK/bench" \
    --out "$WORK/bench_int8.json"
  echo "results: $WORK/bench_int8.json"
  exit 0
elif [ "$MODE" != gpu ]; then
  echo "int8_trained_gpu.sh: MODE must be gpu (default) or check, got '$MODE'" >&2; exit 2
fi

T0=$(date +%s)
rm -rf "$RUNS"
synth
T1=$(date +%s)
set +e  # a training stopped by the time limit still leaves best.ckpt
timeout --signal=INT --kill-after=30 "$TRAIN_SECONDS" "$PY" -m streamseg.cli.main train -D synth -M tsm_memtcn \
  -E chunk32 -R "$RUNS" --new --accelerator "$ACCEL" --devices 1 "${SPEC[@]}" \
  -o data.frame_size="$SIZE,$SIZE" -o model.frame_size="$SIZE,$SIZE" -o train.epochs="$EPOCHS" \
  -o train.precision="$PRECISION" -o train.num_workers="$WORKERS" -o train.monitor=acc \
  -o data.preprocess="$PREPROCESS" "${TRAIN_EXTRA[@]}" 2>&1 | tee "$WORK/train.log"
TRAIN_RC=${PIPESTATUS[0]}
set -e
T2=$(date +%s)
RUN=$(ls -d "$RUNS"/synth/tsm_memtcn_chunk32/version_* | tail -n 1)
if [ ! -f "$RUN/checkpoints/best.ckpt" ]; then
  echo "int8_trained_gpu.sh: no $RUN/checkpoints/best.ckpt (training rc $TRAIN_RC)" >&2; exit 1
fi
if [ ! -f "$RUN/metrics.json" ]; then  # stopped by the time limit: score best.ckpt on the test split
  "$PY" -m streamseg.cli.main test -D synth -M tsm_memtcn -E chunk32 -R "$RUNS" --accelerator "$ACCEL" \
    "${SPEC[@]}" -o data.frame_size="$SIZE,$SIZE" -o model.frame_size="$SIZE,$SIZE" \
    -o train.precision="$PRECISION" -o train.num_workers="$WORKERS" -o data.preprocess="$PREPROCESS" --ckpt best \
    2>&1 | tail -n 40
fi
T3=$(date +%s)
"$PY" -m streamseg.cli.main export onnx "$RUN" --out "$WORK/export/model.onnx"
T4=$(date +%s)
cp "$WORK/export/model.onnx" "$WORK/export/model.json" "$RUN/metrics.json" "$OUT/"
tar -czf "$OUT/run.tar.gz" -C "$RUN" config logs/csv/metrics.csv
tail -n 200 "$WORK/train.log" > "$OUT/train.log"
# the videos themselves (about 1.1-1.5 kB a frame at 224x224): the test split's with the labels, and
# the first 12 of the train split's (calibration); a tar over the 16 MiB a file that comes back is
# dropped (`check` then uses the videos it regenerates)
videos() { sed 's/\.txt$//; s|^|Videos/|; s|$|.mp4|' "splits/$1.split1.bundle"; }
(cd "$DATA" && tar -cf "$OUT/videos_test.tar" synth.json groundTruth splits $(videos test) \
  && tar -cf "$OUT/videos_calib.tar" $(videos train | head -n 12))
for t in "$OUT"/videos_*.tar; do
  if [ "$(stat -c %s "$t")" -gt $((16 * 1024 * 1024 - 4096)) ]; then echo "dropped $t: over 16 MiB" >&2; rm "$t"; fi
done
ACC=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1])).get('acc'))" "$RUN/metrics.json")
{
  echo "run: $RUN (training rc $TRAIN_RC: 124/130 = stopped by the ${TRAIN_SECONDS}s limit)"
  echo "frame ${SIZE}x${SIZE}, full MobileNetV2, $NUM_VIDEOS videos, epochs <= $EPOCHS, $PRECISION"
  echo "seconds: synth $((T1 - T0)), train $((T2 - T1)), test $((T3 - T2)), export $((T4 - T3))"
  echo "TEST ACC $ACC"
} | tee "$OUT/summary.txt"
ls -l "$OUT"
