#!/bin/bash
# A stand-in for srun on one machine: starts NTASKS copies of a command with the variables
# srun sets, so that Lightning's SLURM path (SLURMEnvironment: ranks and the rendezvous
# address from SLURM's variables, no process launching of its own) runs without a cluster.
#   scripts/fake_srun.sh 2 .venv/bin/python -m src.train trainer=ddp_cpu \
#       hydra.run.dir=outputs/train/slurm_local
# Exits with the first non-zero status of any task.
set -euo pipefail
ntasks=$1
shift
pids=()
for ((rank = 0; rank < ntasks; rank++)); do
    SLURM_JOB_ID=${SLURM_JOB_ID:-4242} SLURM_JOB_NAME=fpn SLURM_NTASKS=$ntasks \
    SLURM_NTASKS_PER_NODE=$ntasks SLURM_JOB_NUM_NODES=1 SLURM_NNODES=1 SLURM_NODEID=0 \
    SLURM_PROCID=$rank SLURM_LOCALID=$rank SLURM_NODELIST=127.0.0.1 "$@" &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
    wait "$pid" || { s=$?; [ "$status" -eq 0 ] && status=$s; }
done
exit "$status"
