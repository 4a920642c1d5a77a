#!/usr/bin/env bash
# The ablation study of docs/results/study_*.md: the paper's three tables on one synthetic set.
#   scripts/study.sh DATA OUT [TABLES] [-- extra overrides]
#   DATA: synthetic (shapes) or glyphs; OUT: a folder; TABLES: e.g. "1 2 3" (default)
# Table 1 (RPN alone) runs first; its (c) FPN model of seed 0 writes the fixed proposals of both
# splits (the paper froze Table 1's FPN proposals for every row of Table 2); then Table 2 (Fast
# R-CNN on them) and Table 3 (Faster R-CNN). Each table: six rows x seeds 0,1,2 (+sweep=tableN).
# A table whose folder already holds 18 results.json is skipped, so the script can be rerun.
set -euo pipefail
data=$1; out=$2; tables=${3:-"1 2 3"}; shift $(( $# < 3 ? $# : 3 ))
[[ "${1:-}" == "--" ]] && shift
py=${PYTHON:-.venv/bin/python}
common=(recipe=cpu_study "data=$data" "~callbacks.progress_bar" "$@")

done_jobs() { ls "$1"/*/results.json 2>/dev/null | wc -l; }

sweep() {  # table, extra overrides...
  local table=$1; shift
  local dir="$out/table$table"
  if [[ $(done_jobs "$dir") -ge 18 ]]; then echo "table $table: done already ($dir)"; return; fi
  echo "table $table -> $dir ($(date -u +%H:%M:%S))"
  "$py" -m src.train -m "+sweep=table$table" "${common[@]}" "$@" "hydra.sweep.dir=$dir" \
    > "$out/table$table.log" 2>&1
  echo "table $table finished ($(date -u +%H:%M:%S))"
}

proposals() {  # the (c) FPN RPN of seed 0 -> proposals of both splits
  local job
  job=$("$py" - "$out/table1" <<'PY'
import json, sys
from pathlib import Path
for f in sorted(Path(sys.argv[1]).glob("*/results.json")):
    r = json.loads(f.read_text())
    if r.get("variant") == "fpn" and r.get("seed") == 0 and r.get("task") == "rpn":
        print(f.parent); break
PY
)
  [[ -n "$job" ]] || { echo "no table 1 (c) seed 0 run in $out/table1" >&2; exit 1; }
  # the very data that job trained on, read from its composed config
  local -a data_args
  mapfile -t data_args < <("$py" - "$job/.hydra/config.yaml" <<'PY'
import sys
from omegaconf import OmegaConf
import src.training.config  # noqa: F401  (the ${cwd:} resolver)
d = OmegaConf.load(sys.argv[1]).data
print(f"data.root={d.root}")
for k in ("num_train", "num_val", "image_size", "seed", "kind"):
    if k in d.synthetic:
        print(f"data.synthetic.{k}={d.synthetic[k]}")
PY
)
  for split in train2017 val2017; do
    local file="$out/proposals_$split.npz"
    [[ -f "$file" ]] && continue
    "$py" -m src.proposals "ckpt_path=$job/checkpoints/last.ckpt" "split=$split" \
      "output=$file" "data=$data" "${data_args[@]}" "hydra.run.dir=$out/proposals_$split" \
      > "$out/proposals_$split.log" 2>&1
  done
}

mkdir -p "$out"
for t in $tables; do
  case $t in
    1) sweep 1 ;;
    2) proposals
       sweep 2 "data.proposals.train=$out/proposals_train2017.npz" \
               "data.proposals.val=$out/proposals_val2017.npz" ;;
    3) sweep 3 ;;
  esac
done
"$py" -m src.report "$out" --out "$out/report" > "$out/report.log" 2>&1 && echo "report: $out/report/report.md"
