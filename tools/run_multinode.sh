#!/usr/bin/env bash
# Run streamseg training (or feature extraction) on several machines: start this on every node, each with its NODE_RANK.
#
#   tools/run_multinode.sh MODE GPUS_PER_NODE NUM_NODES NODE_RANK MASTER_ADDR MASTER_PORT [streamseg args...]
#   node 0: tools/run_multinode.sh train 4 2 0 10.0.0.1 29500 -D gtea -M mstcn -E paper
#   node 1: tools/run_multinode.sh train 4 2 1 10.0.0.1 29500 -D gtea -M mstcn -E paper
#
# torchrun with a static rendezvous at MASTER_ADDR:MASTER_PORT (node 0's address); Lightning DDP on top.
# Without GPUs, GPUS_PER_NODE means CPU processes (gloo). The experiments root (-R) must be on storage
# every node sees: rank 0 picks the run directory and the others use it. PYTHON picks the interpreter.
set -euo pipefail
if [ $# -lt 6 ]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
MODE=$1; GPUS=$2; NODES=$3; NODE_RANK=$4; ADDR=$5; PORT=$6; shift 6
PY=${PYTHON:-python3}
if [ "$MODE" != train ] && [ "$MODE" != extract ]; then
  echo "run_multinode.sh: only MODE=train or extract runs on several nodes; use run_singlenode.sh for '$MODE'" >&2
  exit 2
fi
for v in "$GPUS" "$NODES" "$PORT"; do
  [[ "$v" =~ ^[1-9][0-9]*$ ]] || { echo "run_multinode.sh: expected a positive integer, got '$v'" >&2; exit 2; }
done
[[ "$NODE_RANK" =~ ^[0-9]+$ ]] && [ "$NODE_RANK" -lt "$NODES" ] || {
  echo "run_multinode.sh: NODE_RANK must be in 0..$((NODES - 1)), got '$NODE_RANK'" >&2; exit 2; }
exec "$PY" -m streamseg.cli.torchrun --nnodes="$NODES" --node_rank="$NODE_RANK" --nproc_per_node="$GPUS" \
  --master_addr="$ADDR" --master_port="$PORT" \
  -m streamseg.cli.main "$MODE" --devices "$GPUS" --num-nodes "$NODES" "$@"
