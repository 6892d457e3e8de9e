"""Train the FaceCLIP encoder (SDXL) with Ray Train: stage align or diffusion.

    python jobs/train_faceclip.py --preset tiny --data out/data --output out/train_faceclip [--num-workers 2]
                             [--strategy ddp|deepspeed] [--max-steps N] [--set train.lr=1e-4] [--resume]

The exported model lands in <output>/model/ (use it with `python -m facegen generate --model DIR`).
"""
import sys

from facegen.cluster.train.run import training_main


def main(argv=None) -> int:
    return training_main("train_faceclip", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
