"""Session of 2026-12-06 23:11: the resumed RPN's proposal files differ from section 23's set A only in
their `source` string (epoch_006.ckpt here; section 23's files name .../table2_rpn/checkpoints/last.ckpt,
which under the Dec 4 callbacks held the same epoch-6 weights). Rewrite the same arrays with section 23's
source string and check the sha256 against set A's. Run from /work/main with .venv/bin/python."""
import hashlib, numpy as np, torch
from src.data.proposals import save_proposals
want = {"train2017": "d7c39b52898844237d5a261db2f11ae3c16c7c738e11b2e99ba03fe285563b54",
        "val2017": "c7a17804eb2d9499609b072bc517b99a9891b8c8bb963a13ba843a4af9565ed0"}
for split in want:
    z = np.load(f"/work/study/shapes_det_d/proposals_{split}.npz")
    c = z["counts"].tolist()
    p = save_proposals(f"/work/study/shapes_det_d/set_a_rewrite/proposals_{split}.npz", z["ids"].tolist(),
                       list(torch.split(torch.from_numpy(z["boxes"]), c)),
                       list(torch.split(torch.from_numpy(z["objectness_logits"]), c)),
                       split=str(z["split"]), source="/work/study/shapes_det_d/table2_rpn/checkpoints/last.ckpt")
    h = hashlib.sha256(p.read_bytes()).hexdigest()
    print(split, h, "equals set A" if h == want[split] else "DIFFERS from set A")
