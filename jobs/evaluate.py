"""Evaluate an exported encoder with the papers' protocol: face similarity (ArcFace) and text alignment (CLIP-T).

    python jobs/evaluate.py --preset tiny --model out/m2/model --faces DIR --method dreamidentity --output out/eval

Writes <output>/metrics.json, report.md, grids/<face>.png, a face-similarity vs text-alignment plot, manifest.json.
"""
from facegen.cluster.eval.protocol import run_evaluation
from facegen.cluster.jobs import job_parser, run_job
from facegen.core.methods import NAMES


def main(argv=None) -> int:
    p = job_parser(__doc__.strip().splitlines()[0])
    p.add_argument("--model", default=None, help="an exported model (<train output>/model); default: the preset's encoder")
    p.add_argument("--faces", required=True, help="a directory (or s3:// prefix) of test face photos")
    p.add_argument("--method", default=NAMES[0], choices=NAMES)
    args = p.parse_args(argv)
    return run_job("evaluate", args, lambda preset, out, a: run_evaluation(a.method, preset, out, a.faces, a.model))


if __name__ == "__main__":
    raise SystemExit(main())
