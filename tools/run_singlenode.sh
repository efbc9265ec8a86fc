#!/usr/bin/env bash
# Run a streamseg command on one machine with NUM_GPUS processes.
#
#   tools/run_singlenode.sh MODE NUM_GPUS [streamseg args...]
#   tools/run_singlenode.sh train 4 -D gtea -M mstcn -E paper
#
# MODE: train | test | extract. NUM_GPUS=1 runs one plain process; NUM_GPUS>1 starts that many processes with
# torchrun (standalone rendezvous) and Lightning DDP. On a machine without GPUs, NUM_GPUS means CPU
# processes talking over gloo. `test` always runs in one process; `extract` gives each process a share
# of the videos. Select GPUs with CUDA_VISIBLE_DEVICES.
# PYTHON picks the interpreter (default: python3).
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
MODE=$1; NUM_GPUS=$2; shift 2
PY=${PYTHON:-python3}
case "$MODE" in
  train|test|extract) ;;
  *) echo "run_singlenode.sh: MODE must be train, test or extract, got '$MODE'" >&2; exit 2 ;;
esac
if ! [[ "$NUM_GPUS" =~ ^[1-9][0-9]*$ ]]; then
  echo "run_singlenode.sh: NUM_GPUS must be a positive integer, got '$NUM_GPUS'" >&2; exit 2
fi
if [ "$NUM_GPUS" -eq 1 ] || [ "$MODE" = test ]; then
  exec "$PY" -m streamseg.cli.main "$MODE" "$@"
fi
exec "$PY" -m streamseg.cli.torchrun --standalone --nnodes=1 --nproc_per_node="$NUM_GPUS" \
  -m streamseg.cli.main "$MODE" --devices "$NUM_GPUS" "$@"
