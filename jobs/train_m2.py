"""Train DreamIdentity's M² encoder (frozen SD2.1) with Ray Train.

    python jobs/train_m2.py --preset tiny --data out/data --output out/train_m2 [--num-workers 2]
                             [--strategy ddp|deepspeed] [--max-steps N] [--set train.lr=1e-4] [--resume]

The exported model lands in <output>/model/ (use it with `python -m facegen generate --model DIR`).
"""
import sys

from facegen.jobs import job_parser, run_job
from facegen.train.run import run_training


def main(argv=None) -> int:
    p = job_parser(__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="the --output of jobs/build_data.py (local or s3://)")
    p.add_argument("--num-workers", type=int, default=1)
    p.add_argument("--strategy", default="ddp", choices=["ddp", "deepspeed"])
    p.add_argument("--max-steps", type=int, default=None)
    args = p.parse_args(argv)
    return run_job("train_m2", args, lambda preset, out, a: run_training(
        "dreamidentity", preset, out, a.data, a.num_workers, a.strategy, a.max_steps))


if __name__ == "__main__":
    sys.exit(main())
