"""Does it carry a face it never saw? The miniature world (`make learn`): on the CPU, training must make a *new* person
appear — data, encoder, token injection, base model, sampling and the face metric all have to work for it to.

    python bench/learn.py [--photos DIR] [--out out/learn] [--quick] [--explore] [--set world.identities=200]

1. The world (facegen/cluster/world/): K anchor people from photos that ship offline (or --photos DIR: a folder per
   person, or one photo per person); a few hundred identities blended from them; base models trained from scratch to
   draw every identity from its code Σ wₖ·Eₖ (SD2.1 layout for DreamIdentity, SDXL layout for FaceCLIP). Anchor
   pairs reserved before anything is built give the validation and held-out identities, never blended in training.
2. Settings chosen on the validation identities only: the guidance of each method (the ceiling's identification),
   then, along training, the checkpoint each method reports (its identification on validation).
3. The real jobs on a local Ray: jobs/build_data.py draws each training identity by name, plain and edited, keeps the
   edits by identity (the self-augmented set) and ingests their views as the FFHQ part; jobs/train_m2.py (with and
   without the self-augmented rows) and jobs/train_faceclip.py train the encoders on it and export them.
4. Scoring (facegen/cluster/world/score.py), held-in (training identities) and held-out, every condition through the
   real pipelines: fresh, trained, ceiling (the true code), lookup (the nearest training identity's code), zeroed,
   shuffled (another identity's photo); identification among the group, mean rank, face similarity, beyond lookup,
   the edit's effect; bootstrap 95 % intervals over identities.
5. The gate: exits 1 when a must-show figure falls short (--explore: report only).

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
    p.add_argument("--quick", action="store_true", help="a plumbing run: few steps, nothing learned (a few minutes)")
    p.add_argument("--explore", action="store_true", help="report only: exit 0 even when a must-show figure falls short")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a LearnConfig field (m2_steps=800) or a world one (world.identities=200)")
    args = p.parse_args(argv)
    cfg = LearnConfig()
    if args.quick:
        cfg = dataclasses.replace(cfg, m2_steps=4, faceclip_steps=4, samples=1, steps=2, guidance=[3.0], held_in=4,
                                  curve_points=1, ablation=False, batch_size=2, ffhq_ratio=0.5, ffhq_views=1,
                                  bootstrap=50,
                                  world=dataclasses.replace(cfg.world, identities=16, validation_pairs=2,
                                                            held_out_pairs=2, views=2, vae_steps=2, base_steps=2,
                                                            batch_size=4, unet_width=32))
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


class Scorer:
    """Draws every condition for a group of identities and scores it (facegen/cluster/world/score.py)."""

    def __init__(self, world, evaluator, analyzer, cfg):
        from facegen.cluster.world.people import colourfulness

        self.world, self.ev, self.analyzer, self.cfg = world, evaluator, analyzer, cfg
        colour = world.at_size(np.concatenate([world.training_views(o.name)[:2] for o in world.split("train")]))
        self.median_colour = float(np.median(colourfulness(colour)))

    def references(self, names):
        from facegen.cluster.world.score import embed

        return embed(self.analyzer, np.stack([self.world.reference(n) for n in names]))

    def identification(self, images, names, truth=None) -> dict:
        from facegen.cluster.world.score import embed, identify

        truth = np.arange(len(names)) if truth is None else np.asarray(truth)
        return identify(embed(self.analyzer, images), self.references(names), truth, self.analyzer.metric)

    def validation(self, pipe, method: str, code: bool = False, guidance=None) -> float:
        """Mean identification among the validation identities: encoder given their input views, or true codes."""
        names = [o.name for o in self.world.split("validation")]
        ids = (self.ev.code_identities(method, [o.w for o in self.world.split("validation")]) if code
               else self.ev.encoder_identities(pipe, names))
        from facegen.cluster.world.experiment import PLAIN_PROMPT

        return float(self.identification(self.ev.draw(pipe, ids, PLAIN_PROMPT, guidance), names)["identification"].mean())

    def group(self, method: str, pipes: dict, group: list, seed: int) -> tuple[dict, dict]:
        """Every condition for `group` (Identity list) → (figures, drawings {condition: N×K×H×W×3})."""
        from facegen.cluster.world.experiment import EDIT_PROMPT, PLAIN_PROMPT
        from facegen.cluster.world.score import black_and_white, bootstrap, closer, embed, summary

        w, ev, n = self.world, self.ev, len(group)
        names = [o.name for o in group]
        nearest = [w.nearest_train(o) for o in group]
        trained_ids = ev.encoder_identities(pipes["trained"], names)
        shuffle = np.roll(np.arange(n), 1)  # identity i is drawn from identity shuffle[i]'s photo
        d = {
            "fresh": ev.draw(pipes["fresh"], ev.encoder_identities(pipes["fresh"], names), PLAIN_PROMPT),
            "trained": ev.draw(pipes["trained"], trained_ids, PLAIN_PROMPT),
            "ceiling": ev.draw(pipes["code"], ev.code_identities(method, [o.w for o in group]), PLAIN_PROMPT),
            "lookup": ev.draw(pipes["code"], ev.code_identities(method, [o.w for o in nearest]), PLAIN_PROMPT),
            "zeroed": ev.draw(pipes["trained"], ev.zero_identities(pipes["trained"], method, n), PLAIN_PROMPT),
            "shuffled": ev.draw(pipes["trained"], [trained_ids[j] for j in shuffle], PLAIN_PROMPT),
        }
        edited = {"trained": ev.draw(pipes["trained"], trained_ids, EDIT_PROMPT),
                  "ceiling": ev.draw(pipes["code"], ev.code_identities(method, [o.w for o in group]), EDIT_PROMPT)}
        if "without_selfaug" in pipes:
            ab_ids = ev.encoder_identities(pipes["without_selfaug"], names)
            d["without_selfaug"] = ev.draw(pipes["without_selfaug"], ab_ids, PLAIN_PROMPT)
            edited["without_selfaug"] = ev.draw(pipes["without_selfaug"], ab_ids, EDIT_PROMPT)
        per = {c: self.identification(x, names, shuffle if c == "shuffled" else None) for c, x in d.items()}
        r = self.cfg.bootstrap
        out = {c: summary(v, r, seed) for c, v in per.items()}
        # Given another identity's photo, is the row's own identity still drawn? (≈ chance when the photo decides;
        # "identification" above scores the same drawings against the photo's identity.)
        own = self.identification(d["shuffled"], names)["identification"]
        out["shuffled"]["own_identity"] = round(float(own.mean()), 4)
        out["shuffled"]["own_identity_ci95"] = bootstrap(own, r, seed)
        # beyond lookup: paired per identity, and closeness to the own reference vs the nearest training identity's
        diff = per["trained"]["identification"] - per["lookup"]["identification"]
        own, other = self.references(names), self.references([o.name for o in nearest])
        closer_trained = closer(embed(self.analyzer, d["trained"]), own, other, self.analyzer.metric)
        real = embed(self.analyzer, w.at_size(np.stack([w.input_view(nm) for nm in names])))[:, None]
        out["beyond_lookup"] = {
            "difference": round(float(diff.mean()), 4), "ci95": bootstrap(diff, r, seed),
            "closer_than_nearest_train": round(float(closer_trained.mean()), 4),
            "closer_ci95": bootstrap(closer_trained, r, seed),
            "closer_ceiling": round(float(closer(embed(self.analyzer, d["ceiling"]), own, other,
                                                  self.analyzer.metric).mean()), 4),
            "closer_real_photos": round(float(closer(real, own, other, self.analyzer.metric).mean()), 4),
            "nearest_train_distance": round(float(np.mean([np.linalg.norm(o.w - m.w) for o, m in zip(group, nearest)])), 4),
        }
        # the edit: black-and-white score edited − plain, per identity; identification of the edited drawings
        out["edit"] = {}
        for c in edited:
            effect = (black_and_white(edited[c], self.median_colour).mean(axis=1)
                      - black_and_white(d[c], self.median_colour).mean(axis=1))
            ident = self.identification(edited[c], names)["identification"]
            row = {"effect": round(float(effect.mean()), 4), "ci95": bootstrap(effect, r, seed),
                   "identification": round(float(ident.mean()), 4),
                   "plain_identification": out[c]["identification"]}
            if c == "trained":
                out["edit"].update(row)
            else:
                out["edit"][c] = row
        return out, {**d, **{f"{c}_edited": x for c, x in edited.items()}}


def learn(args, cfg) -> int:
    import ray
    from facegen.cluster.world.build import build_world
    from facegen.cluster.world.experiment import METHODS, Evaluator, write_job_inputs, write_preset
    from facegen.cluster.world.score import embed
    from facegen.core.face.analyzer import FaceAnalyzer
    from facegen.core.methods import get_method

    start = time.perf_counter()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        import shutil

        shutil.rmtree(out)  # a run's working files: the jobs refuse an output that already holds a run
    log(f"world: anchors from {args.photos or 'the shipped photos'}")
    world = build_world(FaceAnalyzer(), args.photos, cfg.world, log)  # one world for every face stack (LearnConfig.face)
    analyzer = FaceAnalyzer(cfg.face)  # the methods' face stack: data, training, scoring
    log(f"face stack: {cfg.face.model} ({analyzer.metric.name})")
    counts = {s: len(world.split(s)) for s in ("train", "validation", "held_out")}
    log(f"world: {len(world.anchors)} anchors, identities {counts}; base models {world.sd21.parent}")
    timings = {"world_s": round(time.perf_counter() - start, 1)}

    # 1. Guidance per method, chosen on the validation identities (the true codes' identification).
    t = time.perf_counter()
    preset = write_preset(world, out, cfg, {m: cfg.guidance[0] for m in METHODS})
    ev = Evaluator(world, preset, analyzer, cfg)
    scorer = Scorer(world, ev, analyzer, cfg)
    guidance, choice = {}, {}
    for method in METHODS:
        pipe = ev.pipeline(method, None, code=True)
        by_g = {g: round(scorer.validation(pipe, method, code=True, guidance=g), 4) for g in cfg.guidance}
        guidance[method] = max(by_g, key=lambda g: (by_g[g], -g))
        choice[method] = {"guidance_validation_ceiling": {str(g): v for g, v in by_g.items()}, "guidance": guidance[method]}
        log(f"{method}: guidance on validation (ceiling identification) {by_g} → {guidance[method]}")
    preset = write_preset(world, out, cfg, guidance)
    ev = Evaluator(world, preset, analyzer, cfg)
    scorer = Scorer(world, ev, analyzer, cfg)
    timings["choose_guidance_s"] = round(time.perf_counter() - t, 1)

    # 2. The real jobs on a local Ray.
    photos, names = write_job_inputs(world, out, cfg)
    ray.init(num_cpus=2, log_to_driver=True, logging_level="WARNING", include_dashboard=False)
    t = time.perf_counter()
    run_job("build_data", ["--preset", str(preset), "--output", str(out / "data"), "--celebrities", str(names),
                           "--ffhq", str(photos)])
    timings["build_data_s"] = round(time.perf_counter() - t, 1)
    # key → (method, steps, run directory, extra flags); each trained by its registry entry's job
    runs = {"dreamidentity": ("dreamidentity", cfg.m2_steps, out / "train_m2", []),
            "faceclip": ("faceclip", cfg.faceclip_steps, out / "train_faceclip", []),
            "dreamidentity-sdxl": ("dreamidentity-sdxl", cfg.m2_steps, out / "train_m2_sdxl", [])}
    if cfg.ablation:
        runs["dreamidentity_without_selfaug"] = ("dreamidentity", cfg.m2_steps, out / "train_m2_ffhq_only",
                                                 ["--set", "train.ffhq_ratio=1.0"])
    for key, (method, steps, run_dir, extra) in runs.items():
        t = time.perf_counter()
        run_job(get_method(method).job, ["--preset", str(preset), "--method", method, "--data", str(out / "data"),
                                         "--output", str(run_dir), "--max-steps", str(steps), *extra])
        timings[f"{key}_s"] = round(time.perf_counter() - t, 1)
    ray.shutdown()

    # 3. The checkpoint each method reports, chosen on validation (the curve).
    t = time.perf_counter()
    curves, chosen = {}, {}
    for key, (method, steps, run_dir, _) in runs.items():
        curve = [(0, None, scorer.validation(ev.pipeline(method, None), method))]
        for step, ckpt in checkpoints(run_dir):
            model = (run_dir / "model") if step == steps else export_checkpoint(method, preset, ckpt, out / "curve" / key / f"step{step}")
            curve.append((step, model, scorer.validation(ev.pipeline(method, model), method)))
        if all(step != steps for step, _, _ in curve):
            curve.append((steps, run_dir / "model", scorer.validation(ev.pipeline(method, run_dir / "model"), method)))
        best = max((c for c in curve if c[1] is not None), key=lambda c: (c[2], c[0]))
        curves[key] = [{"step": s, "validation_identification": round(v, 4)} for s, _, v in curve]
        chosen[key] = {"step": best[0], "model": str(best[1])}
        log(f"{key}: validation identification over steps {[(s, round(v, 3)) for s, _, v in curve]} → step {best[0]}")
    timings["curves_s"] = round(time.perf_counter() - t, 1)

    # 4. Every condition, held in and held out.
    t = time.perf_counter()
    rng = np.random.default_rng(cfg.world.seed)
    train = world.split("train")
    held_in = [train[i] for i in sorted(rng.choice(len(train), min(cfg.held_in, len(train)), replace=False))]
    groups = {"held_in": held_in, "held_out": world.split("held_out")}
    figures, drawings = {}, {}
    for method in METHODS:
        pipes = {"fresh": ev.pipeline(method, None), "trained": ev.pipeline(method, chosen[method]["model"])}
        pipes["code"] = ev.pipeline(method, None, code=True)  # the pipeline that takes true codes
        if method == "dreamidentity" and cfg.ablation:
            pipes["without_selfaug"] = ev.pipeline(method, chosen["dreamidentity_without_selfaug"]["model"])
        figures[method], drawings[method] = {}, {}
        for g, members in groups.items():
            figures[method][g], drawings[method][g] = scorer.group(method, pipes, members, cfg.world.seed)
            log(f"{method} {g}: " + json.dumps({c: figures[method][g][c]["identification"]
                                               for c in figures[method][g] if "identification" in figures[method][g][c]}))
        figures[method]["chosen"] = {**choice[method], "step": chosen[method]["step"]}
    if cfg.ablation:
        figures["dreamidentity"]["chosen"]["without_selfaug_step"] = chosen["dreamidentity_without_selfaug"]["step"]
    timings["evaluate_s"] = round(time.perf_counter() - t, 1)

    # What the world is: how alike input and reference are, how distinct the identities are.
    held_out = [o.name for o in world.split("held_out")]
    refs = scorer.references(held_out)
    inputs = embed(analyzer, world.at_size(np.stack([world.input_view(n) for n in held_out])))
    metric = analyzer.metric
    between = metric.similarity_matrix(refs, refs)[np.triu_indices(len(held_out), 1)]
    train_refs = scorer.references([o.name for o in train])
    tb = metric.similarity_matrix(train_refs, train_refs)[np.triu_indices(len(train), 1)]

    bench_out = Path(os.environ.get("FACEGEN_BENCH_OUT", "out/bench"))
    bench_out.mkdir(parents=True, exist_ok=True)
    name = "learn" if cfg.face.model == "buffalo_s" else f"learn-{Path(cfg.face.model).name}"  # e.g. learn-dlib
    grid = bench_out / f"{name}_grid.png"
    write_grid(grid, world, groups, drawings)
    write_curve(bench_out / f"{name}_curve.png", curves)
    result = {
        "chance": {"held_in": round(1 / len(held_in), 4), "held_out": round(1 / len(held_out), 4)},
        "identities": {"anchors": len(world.anchors), "train": counts["train"], "validation": counts["validation"],
                       "held_out": counts["held_out"], "held_in_scored": len(held_in)},
        "seconds": round(time.perf_counter() - start, 1),
        "face_metric": metric.name,
        "input_reference_similarity": _spread(np.array([metric.similarity(a, b) for a, b in zip(inputs, refs)])),
        "between_identity_similarity": {"held_out": _spread(between), "train": _spread(tb)},
        **figures,
        "curves": curves,
        "timings": timings,
        "config": dataclasses.asdict(cfg),
        "photos": args.photos or "shipped",
        "anchors": [_short(p.source) for p in world.anchors],
        "grid": str(grid),
    }
    result["gate"] = gate(result)
    record(name, result)
    print_table(result)
    short = [c for c in result["gate"] if not c["ok"]]
    if short:
        log(f"\n{len(short)} must-show figure(s) fall short:" + "".join(f"\n  {c['check']}: {c['value']}" for c in short))
        if not args.explore:
            return 1
    return 0


def _spread(values: np.ndarray) -> dict:
    v = np.asarray(values, np.float64)
    return {"median": round(float(np.median(v)), 4), "p5": round(float(np.percentile(v, 5)), 4),
            "p95": round(float(np.percentile(v, 95)), 4), "n": int(len(v))}


def gate(r: dict) -> list[dict]:
    """The issue's must-show figures, each {check, value, ok}."""
    checks = []

    def check(name, value, ok):
        checks.append({"check": name, "value": value, "ok": bool(ok)})

    chance = r["chance"]["held_out"]
    check("held-out identities ≥ 20 (chance ≤ 0.05)", r["identities"]["held_out"], r["identities"]["held_out"] >= 20)
    if "dreamidentity-sdxl" in r:  # DreamIdentity on SDXL: the held-in figure its issue asks for
        i = r["dreamidentity-sdxl"]["held_in"]["trained"]
        check("dreamidentity-sdxl: held-in trained ≥ 0.8", i["identification"], i["identification"] >= 0.8)
    for m in ("dreamidentity", "faceclip"):
        o, i = r[m]["held_out"], r[m]["held_in"]
        tr = o["trained"]
        check(f"{m}: held-out trained ≥ 0.6", tr["identification"], tr["identification"] >= 0.6)
        check(f"{m}: held-out trained interval above 4× chance", tr["ci95"], tr["ci95"][0] > 4 * chance)
        check(f"{m}: held-out trained ≥ fresh + 0.3", [tr["identification"], o["fresh"]["identification"]],
              tr["identification"] >= o["fresh"]["identification"] + 0.3)
        check(f"{m}: held-out ceiling ≥ 0.75", o["ceiling"]["identification"], o["ceiling"]["identification"] >= 0.75)
        check(f"{m}: held-in trained ≥ 0.8", i["trained"]["identification"], i["trained"]["identification"] >= 0.8)
        b = o["beyond_lookup"]
        check(f"{m}: trained − lookup > 0, interval above 0", [b["difference"], b["ci95"]], b["ci95"][0] > 0)
        check(f"{m}: closer than the nearest training identity ≥ 0.65", b["closer_than_nearest_train"],
              b["closer_than_nearest_train"] >= 0.65)
        check(f"{m}: zeroed ≤ chance + 0.1", o["zeroed"]["identification"], o["zeroed"]["identification"] <= chance + 0.1)
        check(f"{m}: shuffled follows the photo ≥ 0.5", o["shuffled"]["identification"], o["shuffled"]["identification"] >= 0.5)
        check(f"{m}: shuffled draws its own identity ≤ chance + 0.1", o["shuffled"]["own_identity"],
              o["shuffled"]["own_identity"] <= chance + 0.1)
        e = o["edit"]
        check(f"{m}: edit effect ≥ 0.5 × the ceiling's", [e["effect"], e["ceiling"]["effect"]],
              e["effect"] >= 0.5 * e["ceiling"]["effect"] and e["effect"] > 0)
        check(f"{m}: edited identification ≥ 0.8 × plain", [e["identification"], e["plain_identification"]],
              e["identification"] >= 0.8 * e["plain_identification"])
    return checks


def print_table(r: dict) -> None:
    conditions = ("fresh", "trained", "ceiling", "lookup", "zeroed", "shuffled", "without_selfaug")
    print(f"\nidentification [95% CI] — held-in chance {r['chance']['held_in']}, held-out chance {r['chance']['held_out']}")
    print(f"{'':28}" + "".join(f"{c:>20}" for c in conditions))
    for m in (m for m in ("dreamidentity", "faceclip", "dreamidentity-sdxl") if m in r):
        for g in ("held_in", "held_out"):
            row = r[m][g]
            cells = [f"{row[c]['identification']:.2f} [{row[c]['ci95'][0]:.2f},{row[c]['ci95'][1]:.2f}]" if c in row else "—"
                     for c in conditions]
            print(f"{m + ' ' + g:28}" + "".join(f"{c:>20}" for c in cells))
        b, e = r[m]["held_out"]["beyond_lookup"], r[m]["held_out"]["edit"]
        print(f"  {m} beyond lookup: trained − lookup {b['difference']:+.2f} {b['ci95']}; closer than nearest train "
              f"{b['closer_than_nearest_train']:.2f} {b['closer_ci95']} (ceiling {b['closer_ceiling']:.2f}, real photos "
              f"{b['closer_real_photos']:.2f}); edit effect {e['effect']:+.2f} {e['ci95']} (ceiling "
              f"{e['ceiling']['effect']:+.2f}), edited identification {e['identification']:.2f}")


def _short(source: str) -> str:
    parts = Path(source).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else source


GRID_COLUMNS = ("input", "reference", "fresh", "trained", "lookup", "ceiling", "zeroed")


def write_grid(path: Path, world, groups: dict, drawings: dict, held_out_rows: int = 6, held_in_rows: int = 3) -> None:
    """Per method, a row per identity (held-out rows first): input photo | reference | fresh | trained | lookup |
    ceiling | zeroed, the plain prompt, sample 0."""
    import PIL.Image
    import PIL.ImageDraw

    size = world.config.size
    gap = np.full((size, 2, 3), 255, np.uint8)
    blocks = []
    for method, by_group in drawings.items():
        rows = []
        for g, count in (("held_out", held_out_rows), ("held_in", held_in_rows)):
            for i, o in enumerate(groups[g][:count]):
                cells = [world.at_size(world.input_view(o.name)[None])[0], world.reference(o.name)]
                cells += [by_group[g][c][i, 0] for c in GRID_COLUMNS[2:]]
                rows.append(np.concatenate([x for c in cells for x in (c, gap)][:-1], axis=1))
        block = np.concatenate(rows, axis=0)
        scale = 3
        block = np.asarray(PIL.Image.fromarray(block).resize((block.shape[1] * scale, block.shape[0] * scale),
                                                            PIL.Image.Resampling.NEAREST))
        header = PIL.Image.new("RGB", (block.shape[1], 30), "white")
        draw = PIL.ImageDraw.Draw(header)
        draw.text((2, 1), f"{method}: held-out rows first ({held_out_rows}), then held-in ({held_in_rows})", fill="black")
        for j, label in enumerate(GRID_COLUMNS):
            draw.text((j * (size + 2) * scale + 2, 16), label, fill="black")
        blocks.append(np.concatenate([np.asarray(header), block], axis=0))
    sep = [np.full((blocks[0].shape[0], 16, 3), 255, np.uint8)]
    grid = np.concatenate([x for b in blocks for x in (b, *sep)][:-1], axis=1)
    tmp = path.with_suffix(".tmp.png")
    PIL.Image.fromarray(grid).save(tmp)
    os.replace(tmp, path)


def write_curve(path: Path, curves: dict) -> None:
    from facegen.cluster.plots import new_axes, png_bytes

    fig, ax = new_axes((6, 3.5))
    for key, rows in curves.items():
        ax.plot([r["step"] for r in rows], [r["validation_identification"] for r in rows], marker="o", label=key)
    ax.set(xlabel="training step", ylabel="validation identification", title="Does it carry a new face? (validation)")
    ax.legend(fontsize=7)
    tmp = path.with_suffix(".tmp.png")
    tmp.write_bytes(png_bytes(fig))
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
