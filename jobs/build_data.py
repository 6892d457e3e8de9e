"""Build the self-augmented editability dataset (and ingest FFHQ) on Ray Data.

    python jobs/build_data.py --preset tiny --output out/data [--num-identities N] [--celebrities FILE]
                              [--ffhq DIR|s3://...] [--method NAME] [--set data.keep_fraction=0.25] [--resume]

--method (data.method) names the registry entry whose base model draws the set: dreamidentity (SD 2.1) by default,
dreamidentity-sdxl for SDXL.

See facegen/cluster/data/build.py for the stages; DESIGN.md "Data on disk" for the output.
"""
import sys

from facegen.cluster.data.build import run_build
from facegen.cluster.jobs import ensure_ray, job_parser, run_job
from facegen.core.config.data import read_names
from facegen.core.errors import ConfigError
from facegen.core.methods import REGISTRY


def body(preset, out, args) -> dict:
    names = read_names(args.celebrities)  # checked before Ray starts
    if args.method is not None:
        preset.data.method = args.method
    preset.method(preset.data.method)  # the preset configures the method whose base draws the set
    if args.num_identities is not None and args.num_identities < 0:
        raise ConfigError("--num-identities must be ≥ 0")
    ensure_ray()
    report = run_build(preset, out, names, args.ffhq, args.num_identities)
    print("throughput per stage (items per busy actor-second):", flush=True)
    for stage, t in report.throughput.items():
        print(f"  {stage:>13}: {t['items']:6d} items  {t['busy_s']:8.1f} s busy  {t['per_s']:8.2f}/s", flush=True)
    print("counts: " + ", ".join(f"{k}={v}" for k, v in report.counts.items()), flush=True)
    return {"counts": report.counts, "throughput": report.throughput, "timings": {"build_s": round(report.seconds, 2)}}


def main(argv=None) -> int:
    p = job_parser(__doc__.splitlines()[0])
    p.add_argument("--celebrities", default=None, help="a UTF-8 file, one name per line (default: the shipped list)")
    p.add_argument("--num-identities", type=int, default=None, help="use the first N names (0 = FFHQ only)")
    p.add_argument("--ffhq", default=None, help="a folder (or s3:// prefix) of face photos to ingest")
    p.add_argument("--method", default=None, choices=[m.name for m in REGISTRY.values() if m.base in ("sd21", "sdxl")],
                   help="whose base model draws the set (data.method; default: the preset's)")
    return run_job("build_data", p.parse_args(argv), body)


if __name__ == "__main__":
    sys.exit(main())
