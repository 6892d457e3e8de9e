"""Does it learn identity? The miniature world (`make learn`): on the CPU, in minutes, training must make the person
appear — data, encoder, token injection, base model, sampling and the face metric all have to work for it to.

    python bench/learn.py [--photos DIR] [--out out/learn] [--quick] [--set world.identities=12] [--set m2_steps=800]

1. The world (facegen/cluster/world/): N real people from photos that ship offline (or --photos DIR: a folder per person, or
   one photo per person), augmented aligned views, and two base models trained from scratch that draw each person
   from a name word and obey "in black and white" — SD2.1 layout for DreamIdentity, SDXL layout for FaceCLIP. Built
   once into the cache. The last `world.held_out` people are known to the base models but never shown to an encoder.
2. The real jobs on a local Ray: jobs/build_data.py draws each held-in person by name, plain and edited, keeps the
   edits by identity (the self-augmented set) and ingests the people's views as the FFHQ part; jobs/train_m2.py and
   jobs/train_faceclip.py train the encoders on it (presets pointed at the world's base models) and export them.
3. Scoring (facegen/cluster/world/score.py): for each person, K images from a view no encoder saw, "a photo of S*" and
   "a photo of S* in black and white", through the real pipelines — fresh encoder, trained encoder, and the base
   model given the person's own word (the ceiling): identification among the N references (chance 1/N), face
   similarity, edit obeyed; checkpoints along training give the metric over steps.

Writes out/bench/learn.json (printed last), out/bench/learn_grid.png and out/bench/learn_curve.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import record  # noqa: E402


def log(msg: str) -> None:
    print(msg, flush=True)


def run_job(name: str, argv: list[str]) -> None:
    """A job's own entry point (jobs/<name>.py main), with the command line a user would type."""
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    log(f"$ python jobs/{name}.py {' '.join(argv)}")
    start = time.perf_counter()
    rc = module.main(argv)
    if rc:
        raise SystemExit(f"error: jobs/{name}.py exited with {rc}")
    log(f"  ({time.perf_counter() - start:.0f}s)")


def parse(argv=None):
    from facegen.cluster.world.experiment import LearnConfig, with_overrides

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", default=None, help="a folder of face photos: a sub-folder per person, or one photo each")
    p.add_argument("--out", default="out/learn", help="working directory (data, training runs, world preset)")
    p.add_argument("--quick", action="store_true", help="a plumbing run: few steps, nothing learned (seconds, not minutes)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a LearnConfig field (m2_steps=800) or a world one (world.identities=12)")
    args = p.parse_args(argv)
    cfg = LearnConfig()
    if args.quick:
        cfg = dataclasses.replace(cfg, m2_steps=4, faceclip_steps=4, samples=1, steps=2, curve_points=1, ablation=False,
                                  batch_size=2, ffhq_ratio=0.5,
                                  world=dataclasses.replace(cfg.world, identities=4, held_out=1, views=3, vae_steps=2,
                                                            base_steps=2))
    return args, with_overrides(cfg, args.set)


def checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    from facegen.cluster.train.loop import STATE_FILE

    out = []
    for d in sorted((run_dir / "checkpoints").glob("*/checkpoint_*")):
        state = d / STATE_FILE
        if state.is_file():
            out.append((json.loads(state.read_text())["step"], d))
    return sorted(out)


def export_checkpoint(method: str, preset_path: Path, checkpoint: Path, directory: Path) -> Path:
    """A checkpoint → the export `--model` loads, as the training job exports its final one."""
    from facegen.cluster.data.storage import Storage
    from facegen.cluster.train.run import export
    from facegen.core.config import load_preset

    export(method, load_preset(str(preset_path)), "ddp", str(checkpoint), Storage.open(str(directory)))
    return directory / "model"


def main(argv=None) -> int:
    from facegen.core.errors import FacegenError

    try:
        args, cfg = parse(argv)
        return learn(args, cfg)
    except FacegenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def learn(args, cfg) -> int:
    import ray
    from facegen.cluster.world.build import build_world
    from facegen.cluster.world.experiment import (
        EDIT_PROMPT,
        PLAIN_PROMPT,
        Evaluator,
        write_job_inputs,
        write_preset,
    )
    from facegen.cluster.world.experiment import record as learn_record
    from facegen.core.face.analyzer import FaceAnalyzer

    start = time.perf_counter()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        import shutil

        shutil.rmtree(out)  # a run's working files: the jobs refuse an output that already holds a run
    analyzer = FaceAnalyzer()
    log(f"world: finding people in {args.photos or 'the shipped photos'}")
    world = build_world(analyzer, args.photos, cfg.world, log)
    log(f"world: {len(world.people)} people — held in {', '.join(world.held_in)}; held out {', '.join(world.held_out)}"
        f"; base models {world.sd21.parent}")
    timings = {"world_s": round(time.perf_counter() - start, 1)}
    preset = write_preset(world, out, cfg)
    photos, names = write_job_inputs(world, out)

    ray.init(num_cpus=2, log_to_driver=True, logging_level="WARNING", include_dashboard=False)
    t = time.perf_counter()
    run_job("build_data", ["--preset", str(preset), "--output", str(out / "data"), "--celebrities", str(names),
                           "--ffhq", str(photos)])
    timings["build_data_s"] = round(time.perf_counter() - t, 1)
    runs = {"dreamidentity": ("train_m2", cfg.m2_steps, out / "train_m2", []),
            "faceclip": ("train_faceclip", cfg.faceclip_steps, out / "train_faceclip", [])}
    if cfg.ablation:
        runs["dreamidentity_without_selfaug"] = ("train_m2", cfg.m2_steps, out / "train_m2_ffhq_only",
                                                 ["--set", "train.ffhq_ratio=1.0"])
    for key, (job, steps, run_dir, extra) in runs.items():
        t = time.perf_counter()
        run_job(job, ["--preset", str(preset), "--data", str(out / "data"), "--output", str(run_dir),
                      "--max-steps", str(steps), *extra])
        timings[f"{key}_s"] = round(time.perf_counter() - t, 1)
    ray.shutdown()

    t = time.perf_counter()
    evaluator = Evaluator(world, preset, analyzer, cfg)
    scores, drawings, curves = {}, {}, {}
    for method in ("dreamidentity", "faceclip"):
        job, steps, run_dir, _ = runs[method]
        s, d = {}, {}
        d["fresh"] = evaluator.draw_encoder(evaluator.pipeline(method, None), world.names)
        d["trained"] = evaluator.draw_encoder(evaluator.pipeline(method, run_dir / "model"), world.names)
        d["ceiling"] = evaluator.draw_ceiling(method, world.names)
        if method == "dreamidentity" and cfg.ablation:
            d["without_selfaug"] = evaluator.draw_encoder(
                evaluator.pipeline(method, runs["dreamidentity_without_selfaug"][2] / "model"), world.names)
        for condition, images in d.items():
            s[condition] = evaluator.score(images)
        scores[method], drawings[method] = s, d
        curve = [(0, s["fresh"]["held_in"]["plain"])]
        for step, ckpt in checkpoints(run_dir):
            model = export_checkpoint(method, preset, ckpt, out / "curve" / method / f"step{step}")
            images = evaluator.draw_encoder(evaluator.pipeline(method, model), world.held_in, prompts=(PLAIN_PROMPT,))
            curve.append((step, evaluator.score(images)["held_in"]["plain"]))
        curves[method] = [{"step": step, **v} for step, v in curve]
        log(f"{method}: " + json.dumps(learn_record(world, {method: s})[method]))
    timings["evaluate_s"] = round(time.perf_counter() - t, 1)

    np.savez_compressed(out / "drawings.npz", **{f"{m}/{c}/{p}/{n}": x for m, d in drawings.items()
                                                 for c, by_prompt in d.items() for p, by_name in by_prompt.items()
                                                 for n, x in by_name.items()})
    bench_out = Path(os.environ.get("FACEGEN_BENCH_OUT", "out/bench"))
    bench_out.mkdir(parents=True, exist_ok=True)
    grid = bench_out / "learn_grid.png"
    write_grid(grid, world, drawings, (PLAIN_PROMPT, EDIT_PROMPT))
    write_curve(bench_out / "learn_curve.png", curves, 1 / len(world.people))
    result = {
        "chance": round(1 / len(world.people), 4),
        "identities": len(world.people),
        "people": {p.name: {"source": _short(p.source), "held_out": p.held_out} for p in world.people},
        "seconds": round(time.perf_counter() - start, 1),
        **learn_record(world, scores),
        "curves": curves,
        "conditions": scores,
        "timings": timings,
        "config": dataclasses.asdict(cfg),
        "photos": args.photos or "shipped",
        "grid": str(grid),
    }
    record("learn", result)
    return 0


def _short(source: str) -> str:
    parts = Path(source).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else source


def write_grid(path: Path, world, drawings: dict, prompts) -> None:
    """Per method and prompt, a row per person: reference | fresh encoder | trained | base model with the name."""
    import PIL.Image
    import PIL.ImageDraw

    size = world.config.size
    blocks = []
    for method, d in drawings.items():
        for prompt in prompts:
            title = f"{method}: \"{prompt}\""
            rows = []
            for name in world.names:
                ref = world.at_size(world.eval_view(name)[None])[0]
                cells = [ref] + [d[c][prompt][name][0] for c in ("fresh", "trained", "ceiling")]
                gap = np.full((size, 4, 3), 255, np.uint8)
                rows.append(np.concatenate([cells[0], gap, *[x for c in cells[1:] for x in (c, gap)]], axis=1))
            block = np.concatenate(rows, axis=0)
            header = PIL.Image.new("RGB", (block.shape[1], 26), "white")
            draw = PIL.ImageDraw.Draw(header)
            draw.text((2, 1), title, fill="black")
            for i, label in enumerate(("photo", "fresh", "trained", "base+name")):
                draw.text((i * (size + 4) + 2, 13), label, fill="black")
            blocks.append(np.concatenate([np.asarray(header), block], axis=0))
    sep = [np.full((blocks[0].shape[0], 12, 3), 255, np.uint8)]
    grid = np.concatenate([x for b in blocks for x in (b, *sep)][:-1], axis=1)
    tmp = path.with_suffix(".tmp.png")
    PIL.Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), PIL.Image.Resampling.NEAREST).save(tmp)
    os.replace(tmp, path)


def write_curve(path: Path, curves: dict, chance: float) -> None:
    from facegen.cluster.plots import new_axes, png_bytes

    fig, ax = new_axes((6, 3.5))
    for method, rows in curves.items():
        ax.plot([r["step"] for r in rows], [r["identification"] for r in rows], marker="o", label=f"{method}: identification")
        ax.plot([r["step"] for r in rows], [r["face_sim"] for r in rows], marker=".", ls="--", label=f"{method}: face sim")
    ax.axhline(chance, color="grey", lw=0.8, ls=":", label="chance")
    ax.set(xlabel="training step", ylabel="held-in, plain prompt", title="Does it learn? (the miniature world)")
    ax.legend(fontsize=7)
    tmp = path.with_suffix(".tmp.png")
    tmp.write_bytes(png_bytes(fig))
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
