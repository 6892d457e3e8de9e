"""Train DreamIdentity's M² encoder (frozen SD2.1, or SDXL with --method dreamidentity-sdxl) with Ray Train.

    python jobs/train_m2.py --preset tiny --data out/data --output out/train_m2 [--method dreamidentity-sdxl]
                             [--num-workers 2] [--strategy ddp|deepspeed] [--max-steps N] [--set train.lr=1e-4] [--resume]

The exported model lands in <output>/model/ (use it with `python -m facegen generate --model DIR`).
"""
import sys

from facegen.cluster.train.run import training_main


def main(argv=None) -> int:
    return training_main("train_m2", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
