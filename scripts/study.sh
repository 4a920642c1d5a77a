#!/usr/bin/env bash
# The ablation study of docs/results/study_*.md: the paper's three tables on one synthetic set.
#   scripts/study.sh DATA OUT [TABLES] [-- extra overrides]
#   DATA: synthetic (shapes) or glyphs; OUT: a folder; TABLES: e.g. "1 2 3" (default)
# Each table: six rows x seeds 0,1,2 (+sweep=tableN). Table 1 (the RPN alone) at recipe=cpu_study
# (128 px, 4 epochs: the RPN converges there); Tables 2 and 3 at recipe=cpu_study_detection (the
# demo's 256 px data, 8 epochs: at cpu_study's scale a detector stays at AP ~1 on every row).
# Table 2 first trains Table 1's (c) FPN RPN (seed 0) at Table 2's scale, in OUT/table2_rpn, and
# writes its proposals of both splits (the paper froze Table 1's FPN proposals for every row of
# Table 2). A table whose folder already holds 18 results.json is skipped, so the script can be
# rerun; so is a finished table2_rpn or proposal file.
set -euo pipefail
data=$1; out=$2; tables=${3:-"1 2 3"}; shift $(( $# < 3 ? $# : 3 ))
[[ "${1:-}" == "--" ]] && shift
py=${PYTHON:-.venv/bin/python}
common=("data=$data" "~callbacks.progress_bar" "$@")
recipe_of=([1]=cpu_study [2]=cpu_study_detection [3]=cpu_study_detection)
single=()  # the overrides for a single run: a sweep's hydra.sweeper.params.* would break it
for o in "${common[@]}"; do [[ "$o" == hydra.sweeper.* ]] || single+=("$o"); done

done_jobs() { ls "$1"/*/results.json 2>/dev/null | wc -l; }

sweep() {  # table, extra overrides...
  local table=$1; shift
  local dir="$out/table$table"
  if [[ $(done_jobs "$dir") -ge 18 ]]; then echo "table $table: done already ($dir)"; return; fi
  echo "table $table -> $dir ($(date -u +%H:%M:%S))"
  "$py" -m src.train -m "+sweep=table$table" "recipe=${recipe_of[$table]}" "${common[@]}" "$@" \
    "hydra.sweep.dir=$dir" > "$out/table$table.log" 2>&1 \
    || { echo "table $table failed: see $out/table$table.log" >&2; exit 1; }
  echo "table $table finished ($(date -u +%H:%M:%S))"
}

proposals() {  # Table 1's (c) FPN RPN, seed 0, at Table 2's scale -> proposals of both splits
  local job="$out/table2_rpn"
  if [[ ! -f "$job/results.json" ]]; then
    echo "table 1 (c) seed 0 at table 2's scale -> $job ($(date -u +%H:%M:%S))"
    # 1000 test proposals: Table 1's AR@1000, on which the run keeps its best checkpoint
    "$py" -m src.train experiment=table1/c_fpn seed=0 "recipe=${recipe_of[2]}" \
      model.rpn_post_nms_top_n_test=1000 "${single[@]}" "hydra.run.dir=$job" > "$out/table2_rpn.log" 2>&1 \
      || { echo "the rpn failed: see $out/table2_rpn.log" >&2; exit 1; }
  fi
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
      > "$out/proposals_$split.log" 2>&1 || { echo "proposals failed: see $out/proposals_$split.log" >&2; exit 1; }
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
