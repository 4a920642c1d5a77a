#!/bin/bash
# Copy glyphs_a_c4_s1's last.ckpt after each epoch and probe its RPN's proposal counts at the
# recipe's per-level count (600 / 1000) and at Detectron's single-map 6x (3600 / 6000).
cd /work/main
D=/work/study/table3; R=$D/glyphs_a_c4_s1; P=$D/probes
seen=$(stat -c %Y $R/checkpoints/last.ckpt)
while pgrep -f "hydra.run.dir=$R" >/dev/null; do
  sleep 30
  now=$(stat -c %Y $R/checkpoints/last.ckpt 2>/dev/null) || continue
  [ "$now" = "$seen" ] && continue
  sleep 20; seen=$now
  n=$(python3 -c "import sys; print(1+max(int(l.split(',')[0]) for l in open('$R/csv/metrics.csv').readlines()[1:] if l.split(',')[0].isdigit()) )" 2>/dev/null)
  ck=$P/glyphs_a_c4_s1_last_$(date -u +%H%M).ckpt; cp $R/checkpoints/last.ckpt $ck
  .venv/bin/python -m src.analysis.anchor_stats data/glyphs --split val2017 --images 40 --checkpoint $ck > $ck.txt 2>&1
  .venv/bin/python -m src.analysis.anchor_stats data/glyphs --split val2017 --images 40 --checkpoint $ck \
      --pre-nms-top-n-train 3600 --pre-nms-top-n-test 6000 > $ck.pre6x.txt 2>&1
  echo "$(date -u +%FT%T) probed $ck (csv epochs seen: $n)" >> $P/probes.log
done
