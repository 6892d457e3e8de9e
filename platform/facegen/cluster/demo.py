"""`make demo`: the whole platform on the tiny preset on a local Ray, each step through its real entry point:

    build_data → every registry entry the preset offers trained by its job (a few steps: train_m2 for DreamIdentity
    on SD 2.1 and on SDXL, train_faceclip, train_facet5) → evaluate (each) → generate (each)
    → a scene-switch grid (the head in three boxes, through the ControlNet)

Inputs are the face photos that ship with scikit-image and insightface. Each job's output lands in
out/demo/<job>/, the pictures in out/demo/. The jobs run as their own processes (`python jobs/NAME.py …`), as
`ray job submit` would run them, attached to one local Ray started here so it starts once.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from facegen.cli import main as cli

REPO = Path(__file__).resolve().parents[3]  # platform/facegen/cluster/demo.py → the checkout


def shipped_photos() -> dict[str, Path]:
    import insightface
    import skimage

    return {
        "astronaut": Path(skimage.__file__).parent / "data" / "astronaut.png",
        "group": Path(insightface.__file__).parent / "data" / "images" / "t1.jpg",
        "tom_hanks": Path(insightface.__file__).parent / "data" / "images" / "Tom_Hanks_54745.png",
    }


PROMPTS = {"chef": "S* as a chef, looking at the camera", "painting": "oil painting style, S* face"}


def trained_dir(out: Path, method) -> Path:
    """Where the demo trains a registry entry: its job's name (train_m2, …), with the base for a second entry of
    the same job (train_m2_sdxl)."""
    from facegen.core.methods import REGISTRY

    first = next(m for m in REGISTRY.values() if m.job == method.job)
    return out / (method.job if method is first else f"{method.job}_{method.base}")


def offered(preset: str) -> list:
    """The registry entries the preset configures, in registry order."""
    from facegen.core.config import load_preset
    from facegen.core.methods import REGISTRY

    return [REGISTRY[m] for m in load_preset(preset).method_names]


def chain(out: Path, preset: str) -> list[tuple[str, list[str]]]:
    """(job, arguments) in order: a dataset, every offered method fine-tuned on it by its job, each evaluated."""
    inputs = out / "inputs"
    common = ["--preset", preset]
    steps = [("build_data", [*common, "--output", str(out / "build_data"), "--num-identities", "3",
                             "--ffhq", str(inputs / "ffhq"), "--set", "data.max_prompts=2", "--set", "data.steps=4",
                             "--set", "data.keep_fraction=0.5"])]
    for method in offered(preset):
        steps.append((method.job, [*common, "--method", method.name, "--output", str(trained_dir(out, method)),
                                   "--data", str(out / "build_data"), "--max-steps", "10"]))
    for method in offered(preset):
        steps.append(("evaluate", [*common, "--output", str(out / f"evaluate_{method.name}"), "--method", method.name,
                                   "--model", str(trained_dir(out, method) / "model"), "--faces", str(inputs / "faces")]))
    return steps


def _prepare_inputs(out: Path) -> None:
    photos = shipped_photos()
    for folder, names in (("ffhq", ("astronaut", "tom_hanks")), ("faces", ("astronaut", "tom_hanks"))):
        d = out / "inputs" / folder
        d.mkdir(parents=True, exist_ok=True)
        for name in names:
            shutil.copy(photos[name], d / f"{name}{photos[name].suffix}")


def run_jobs(out: Path, preset: str) -> dict[str, float]:
    import ray

    jobs_dir = REPO / "jobs"
    if not (jobs_dir / "build_data.py").is_file():
        raise SystemExit(f"error: {jobs_dir} not found: run `make demo` from a facegen checkout")
    steps = chain(out, preset)
    for _, args in steps:  # a rerun starts over: the demo owns these folders
        shutil.rmtree(Path(args[args.index("--output") + 1]), ignore_errors=True)
    _prepare_inputs(out)
    ray.init(include_dashboard=False, logging_level="WARNING")
    env = {**os.environ, "RAY_ADDRESS": ray.get_runtime_context().gcs_address}
    timings = {}
    try:
        for job, args in steps:
            label = Path(args[args.index("--output") + 1]).name
            print(f"\n=== {label}: python jobs/{job}.py {' '.join(args)}", flush=True)
            start = time.time()
            rc = subprocess.call([sys.executable, str(jobs_dir / f"{job}.py"), *args], env=env, cwd=REPO)
            timings[label] = time.time() - start
            if rc != 0:
                raise SystemExit(f"error: {label} failed (exit {rc}); see its output above")
    finally:
        ray.shutdown()
    return timings


def draw(out: Path, preset: str) -> list[Path]:
    """Portraits of the shipped photos through `python -m facegen generate`, with the encoders just trained: every
    offered method, DreamIdentity's prompts with S* where the person goes."""
    written = []
    photos = shipped_photos()
    cli(["faces", *map(str, photos.values())])
    for name, photo in photos.items():
        for method in offered(preset):
            # no S* for FaceCLIP and FaceT5: the face enters through the joint encoder
            prompts = PROMPTS if method.needs_placeholder else {"chef": "a chef in a kitchen, looking at the camera"}
            for tag, prompt in prompts.items():
                target = out / f"{method.name}_{name}_{tag}.png"
                if cli(["generate", "--preset", preset, "--method", method.name,
                        "--model", str(trained_dir(out, method) / "model"), "--face", str(photo), "--prompt", prompt,
                        "--out", str(target), "--seed", "0"]) != 0:
                    raise SystemExit(f"error: generate failed for {photo}")
                written.append(target)
    return written


SCENE_BOXES = {"left": (8, 24, 56, 72), "centre": (36, 20, 56, 72), "right": (64, 40, 56, 72)}  # on 128×128


def scene_switch_grid(out: Path, preset: str) -> Path:
    """Scene switch with the trained M²: the astronaut's head placed in three boxes, posed as Tom Hanks's face; row 1
    the keypoint maps the ControlNet reads, row 2 the pictures (same prompt and seed)."""
    import PIL.Image
    import torch

    from facegen.cli import _quiet
    from facegen.core.config import load_preset
    from facegen.core.control import head_control_image
    from facegen.core.face.images import load_image
    from facegen.core.methods import load_pipeline

    _quiet(argparse.Namespace(verbose=False))
    photos = shipped_photos()
    pipe = load_pipeline("dreamidentity", load_preset(preset), out / "train_m2" / "model")
    pipe.set_progress_bar_config(disable=True)
    identity = pipe.encode_identity(photos["astronaut"])
    _, pose = pipe.face_analyzer.largest(photos["tom_hanks"])
    w, h = pipe.config.width, pipe.config.height
    cells = []
    for box in SCENE_BOXES.values():
        cells.append(head_control_image(w, h, box, (pose.kps, pose.bbox), pipe.control_config.render))
        cells.append(pipe("S* as a chef, looking at the camera", identity=identity, head_box=box,
                          pose_image=load_image(photos["tom_hanks"]), generator=torch.Generator().manual_seed(0)).images[0])
    grid = PIL.Image.new("RGB", (w * len(SCENE_BOXES), h * 2), "white")
    for i, cell in enumerate(cells):
        grid.paste(cell.convert("RGB"), ((i // 2) * w, (i % 2) * h))
    target = out / "scene_switch_grid.png"
    grid.save(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out/demo")
    parser.add_argument("--preset", default="tiny")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    start = time.time()
    timings = run_jobs(out, args.preset)
    t = time.time()
    pictures = draw(out, args.preset)
    pictures.append(scene_switch_grid(out, args.preset))
    timings["generate"] = time.time() - t
    print(f"\ndemo done in {time.time() - start:.0f}s ({', '.join(f'{k} {v:.0f}s' for k, v in timings.items())})")
    print(f"  dataset        {out / 'build_data'}/  (selfaug/*.parquet, ffhq/*.parquet, manifest.json)")
    for method in offered(args.preset):
        d = trained_dir(out, method)
        print(f"  {d.name:<18} {d}/model/  ({method.name}'s exported encoder; metrics.jsonl, loss.png)")
    for method in offered(args.preset):
        print(f"  {'evaluate_' + method.name:<18} {out / ('evaluate_' + method.name)}/report.md  (metrics.json, grids/, plot)")
    print(f"  pictures       {len(pictures)} in {out}/  (e.g. {pictures[0].name})")
    print(f"  scene switch   {pictures[-1]}  (head boxes left/centre/right: keypoint maps, then pictures)")
    print("The tiny preset's diffusion models are random, so the pictures are noise-like: the point is the chain;")
    print("see docs/models.md 'Real weights' for the real presets.")
    show_learn(out, Path(os.environ.get("FACEGEN_BENCH_OUT", "out/bench")))
    return 0


def show_learn(out: Path, bench: Path) -> None:
    """Pictures of faces the encoders never saw: the miniature world's, when `make learn` has been run."""
    import json

    record, grid = bench / "learn.json", bench / "learn_grid.png"
    if not (record.is_file() and grid.is_file()):
        print("\nThe miniature world, where training must carry a face it never saw, has not been run here: `make learn`")
        print("(≈ 70 min on 2 cores, first time) trains the encoders on blended real faces and writes its pictures; "
              "`make demo` shows them then.")
        return
    r = json.loads(record.read_text())
    shutil.copyfile(grid, out / "learn_grid.png")
    n = r["identities"]
    print(f"\nThe miniature world (`make learn`: {n['train']} training identities, {n['held_out']} held-out ones no model "
          f"saw, chance {r['chance']['held_out']:.2f}) — {out / 'learn_grid.png'}:")
    print("  input photo | reference | fresh encoder | trained | lookup | ceiling (true code) | zeroed")
    from facegen.core.methods import NAMES

    for method in (m for m in NAMES if m in r):
        for group in ("held_in", "held_out"):
            m = r.get(method, {}).get(group)
            if not m:
                continue
            cells = ", ".join(f"{c} {m[c]['identification']:.2f} [{m[c]['ci95'][0]:.2f}, {m[c]['ci95'][1]:.2f}]"
                              for c in ("trained", "fresh", "lookup", "ceiling") if c in m)
            print(f"  {method:<13} {group:<8} identification: {cells}")
            b = m.get("beyond_lookup")
            if b:
                print(f"  {'':<13} {'':<8} trained − lookup {b['difference']:+.2f} [{b['ci95'][0]:+.2f}, {b['ci95'][1]:+.2f}], "
                      "closer than the nearest "
                      f"training identity {b['closer_than_nearest_train']:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())
