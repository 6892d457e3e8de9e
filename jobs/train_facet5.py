"""Fine-tune FaceT5-FLUX with Ray Train: LoRA on the DiT and the encoder's fuser, FLUX's flow-matching loss.

    python jobs/train_facet5.py --preset tiny --data out/data --output out/train_facet5 [--num-workers 2]
                           [--strategy ddp|deepspeed] [--set train.deepspeed_stage=3] [--max-steps N] [--resume]

With a real base model, start from a converted encoder (--set methods.facet5.model=DIR, see `python -m facegen convert
facet5-flux`); a 12 B DiT trains only under --strategy deepspeed with train.deepspeed_stage=3.
The exported model lands in <output>/model/ (use it with `python -m facegen generate --method facet5 --model DIR`).
"""
import sys

from facegen.cluster.train.run import training_main


def main(argv=None) -> int:
    return training_main("train_facet5", __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
