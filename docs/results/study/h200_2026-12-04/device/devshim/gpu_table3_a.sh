#!/usr/bin/env bash
# Device-only driver (not part of the project): Table 3 row (a) C4, seeds 0-2, shapes and
# glyphs, on one H200, six jobs at once. Everything still running at DEADLINE s is stopped.
set -u
T0=$(date +%s)
DEADLINE=${DEADLINE:-500}
ACCEL=${ACCEL:-gpu}
EXTRA=${EXTRA:-}
PY=${PY:-python3}
EXP=${EXP:-a_c4}
rm -rf /tmp/runs; mkdir -p "$OUT" /tmp/runs
exec > >(tee "$OUT/driver.log") 2>&1
[ -n "${SKIP_PIP:-}" ] || python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD/.devshim:$PWD PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2 WANDB_MODE=disabled
{
  date -u; nproc; grep -m1 'model name' /proc/cpuinfo
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  $PY -c "import sys,torch,torchvision,pytorch_lightning,torchmetrics,numpy,PIL,matplotlib,hydra,faster_coco_eval;print(sys.version.split()[0],'torch',torch.__version__,'tv',torchvision.__version__,'pl',pytorch_lightning.__version__,'tm',torchmetrics.__version__,'np',numpy.__version__,'PIL',PIL.__version__,'mpl',matplotlib.__version__,'hydra',hydra.__version__,'fce',faster_coco_eval.__version__,'cudnn',torch.backends.cudnn.version(),'cudnn.allow_tf32',torch.backends.cudnn.allow_tf32,'matmul.allow_tf32',torch.backends.cuda.matmul.allow_tf32)"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
$PY -m src.data.synthetic --out data/synthetic --kind shapes --quiet & G1=$!
$PY -m src.data.synthetic --out data/glyphs --kind glyphs --quiet & G2=$!
wait $G1 $G2  # a bare wait would also wait for the tee above
$PY .devshim/digests.py data/synthetic data/glyphs | tee -a "$OUT/env.txt"
echo "setup done at $(( $(date +%s) - T0 )) s"
(while true; do nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader; sleep 10; done) > "$OUT/smi.csv" 2>&1 &
SMI=$!
run_job() {  # name data seed
  local left=$(( DEADLINE - ($(date +%s) - T0) )) s=$(date +%s)
  timeout "$left" $PY -m src.train experiment=$EXP data="$2" seed="$3" trainer.max_epochs=8 \
    '~callbacks.progress_bar' trainer.accelerator=$ACCEL $EXTRA hydra.run.dir=/tmp/runs/"$1" > /tmp/runs/"$1".log 2>&1
  echo "end $1 rc=$? wall=$(( $(date +%s) - s )) s at t=$(( $(date +%s) - T0 )) s" | tee -a "$OUT/queue.log"
}
PIDS=()
for spec in shapes_${EXP}_s2:synthetic:2 glyphs_${EXP}_s1:glyphs:1 glyphs_${EXP}_s2:glyphs:2 \
            shapes_${EXP}_s0:synthetic:0 glyphs_${EXP}_s0:glyphs:0 shapes_${EXP}_s1:synthetic:1; do
  IFS=: read -r name data seed <<< "$spec"
  run_job "$name" "$data" "$seed" &
  PIDS+=($!)
  sleep 2
done
wait "${PIDS[@]}"
sleep 1; kill $SMI 2>/dev/null
for f in /tmp/runs/*.log; do echo "== $f"; tail -25 "$f"; done > "$OUT/tails.txt"
tar -C /tmp/runs --exclude=checkpoints -czf /tmp/runs.tgz . && split -b 15000000 /tmp/runs.tgz "$OUT/runs.tgz.part_"
echo "all done at $(( $(date +%s) - T0 )) s"
