"""A stand-in for SLURM's sbatch, srun and sacct on one machine: just enough for submitit's
SLURM executor (``hydra/launcher=slurm``) to run a sweep here, the way a one-node cluster would.

    python tests/fake_slurm.py sbatch SCRIPT     # runs the script's array tasks in the background
    python tests/fake_slurm.py srun [--output F] [--error F] [--unbuffered] CMD...
    python tests/fake_slurm.py sacct ...          # knows no job: submitit waits for result files

sbatch gives every array task a job id of its own (as SLURM does) and the allocation's variables;
srun starts ``--ntasks-per-node`` copies of CMD with the variables srun sets per task
(SLURM_PROCID, SLURM_LOCALID, ...), so Lightning's SLURMEnvironment wires the DDP ranks.
``tests/test_launchers.py`` puts wrappers named sbatch/srun/sacct first on PATH.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from pathlib import Path


def _fill(pattern: str, task: int | None = None) -> str:
    env = os.environ
    out = pattern.replace("%A", env.get("SLURM_ARRAY_JOB_ID", env.get("SLURM_JOB_ID", "0")))
    out = out.replace("%a", env.get("SLURM_ARRAY_TASK_ID", "0"))
    out = out.replace("%j", env.get("SLURM_JOB_ID", "0"))
    return out.replace("%t", str(task if task is not None else 0))


def sbatch(script: str) -> int:
    text = Path(script).read_text()
    opts = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, re.M))
    if int(opts.get("nodes", "1")) != 1:
        sys.exit("fake sbatch: one node only")
    first, last = (int(x) for x in re.match(r"(\d+)-(\d+)", opts.get("array", "0-0")).groups())
    job_id = random.randrange(100, 900) * 100  # the array's tasks: job_id + 1 + index
    per_node = opts.get("ntasks-per-node", "1")
    for index in range(first, last + 1):
        env = {
            **os.environ,
            "SLURM_JOB_ID": str(job_id + 1 + index),
            "SLURM_ARRAY_JOB_ID": str(job_id),
            "SLURM_ARRAY_TASK_ID": str(index),
            "SLURM_JOB_NAME": opts.get("job-name", "fake"),
            "SLURM_JOB_NUM_NODES": "1",
            "SLURM_NNODES": "1",
            "SLURM_JOB_NODELIST": "127.0.0.1",
            "SLURM_NODELIST": "127.0.0.1",
            "SLURM_NTASKS_PER_NODE": per_node,
            "SLURM_NTASKS": per_node,
            "SLURM_SUBMIT_DIR": os.getcwd(),
        }
        log = Path(
            opts.get("output", os.devnull)
            .replace("%A", str(job_id))
            .replace("%a", str(index))
            .replace("%j", env["SLURM_JOB_ID"])
        )
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as out:
            subprocess.Popen(["bash", script], env=env, stdout=out, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    print(f"Submitted batch job {job_id}")
    return 0


def srun(args: list[str]) -> int:
    files = {"--output": None, "--error": None}
    while args and args[0].startswith("--"):
        flag = args.pop(0)
        if flag in files:
            files[flag] = args.pop(0)
    ntasks = int(os.environ.get("SLURM_NTASKS_PER_NODE", "1"))
    procs = []
    for task in range(ntasks):
        env = {**os.environ, "SLURM_PROCID": str(task), "SLURM_LOCALID": str(task),
               "SLURM_NODEID": "0", "SLURM_STEP_ID": "0"}  # fmt: skip
        out = open(_fill(files["--output"], task), "a") if files["--output"] else None  # noqa: SIM115
        err = open(_fill(files["--error"], task), "a") if files["--error"] else None  # noqa: SIM115
        procs.append(subprocess.Popen(args, env=env, stdout=out, stderr=err))
    codes = [p.wait() for p in procs]
    return next((c for c in codes if c), 0)


def main() -> int:
    command, args = sys.argv[1], sys.argv[2:]
    if command == "sbatch":
        return sbatch(args[-1])
    if command == "srun":
        return srun(args)
    if command == "sacct":
        print("JobID|State|NodeList")
        return 0
    sys.exit(f"fake_slurm: unknown command {command}")


if __name__ == "__main__":
    sys.exit(main())
