"""The command line, `python -m facegen generate | faces | convert | watermark …` (see docs/usage.md).

User mistakes (FacegenError) print one line and exit with status 2; nothing is written unless generation succeeds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

from facegen.core.control import ControlImageResized
from facegen.core.errors import FacegenError
from facegen.core.methods import NAMES, REGISTRY, get_method

# The scene-switch flags, as control.resolve names them in its errors.
CONTROL_FLAGS = {"head_box": "--head-box", "pose_image": "--pose-from", "control_image": "--control-image"}
# The sampling flags, as check_sampling names them in its errors.
SAMPLING_FLAGS = {"steps": "--steps", "guidance_scale": "--guidance", "width": "--width", "height": "--height",
                  "num_images": "--num-images"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m facegen", description="Identity-preserving portrait generation.")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="draw the person in a photo into the scene a prompt describes")
    g.add_argument("--preset", default="tiny", help="tiny | dreamidentity-sd21 | dreamidentity-sdxl | faceclip-sdxl | "
                                                    "facet5-flux | production | a .yaml file")
    g.add_argument("--method", choices=NAMES, default=None, help="default: the preset's first method")
    g.add_argument("--face", action="append", required=True, help="a photo of the person (repeat for several)")
    g.add_argument("--prompt", required=True,
                   help='DreamIdentity (either base): "S* as a chef" (S* marks the person); FaceCLIP, FaceT5: '
                        '"a chef in a kitchen"')
    g.add_argument("--negative-prompt", default=None)
    g.add_argument("--out", required=True, help="output .png (with --num-images N: NAME-1.png … NAME-N.png)")
    g.add_argument("--model", default=None,
                   help="an encoder exported by a training job (sets methods.<method>.model)")
    g.add_argument("--num-images", type=int, default=1)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, default=None)
    g.add_argument("--guidance", type=float, default=None)
    g.add_argument("--width", type=int, default=None)
    g.add_argument("--height", type=int, default=None)
    g.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset key")
    g.add_argument("--head-box", default=None, metavar="X,Y,W,H",
                   help="scene switch: put the head in this box of the output (pixels), through the method's ControlNet")
    g.add_argument("--pose-from", default=None, metavar="PHOTO",
                   help="with --head-box: turn the head as the face in this photo (default: as in --face)")
    g.add_argument("--control-image", default=None, help="a ready control image for the method's ControlNet")
    g.add_argument("--control-scale", type=float, default=None, help="ControlNet strength (default: the preset's)")
    g.add_argument("--control-start", type=float, default=None, help="fraction of the steps where control starts")
    g.add_argument("--control-end", type=float, default=None, help="fraction of the steps where control ends")
    g.add_argument("--verbose", action="store_true", help="show library logs and progress bars")

    f = sub.add_parser("faces", help="detect faces and compare the identities of photos (JSON on stdout)")
    f.add_argument("photos", nargs="+")
    f.add_argument("--preset", default="tiny")
    f.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    f.add_argument("--verbose", action="store_true")
    c = sub.add_parser("convert", help="convert published weights into facegen's export format (see docs/models.md)")
    targets = c.add_subparsers(dest="what", required=True, metavar="WHAT")
    for method in REGISTRY.values():  # each method's converters (methods.base.Converter)
        for conv in method.converters:
            t = targets.add_parser(conv.name, help=conv.help, description=conv.help)
            for flag, text, required in conv.files:
                t.add_argument(f"--{flag}", required=required, help=text)
            t.add_argument("--out", required=True, help=f"a new directory: use it as --model DIR, {method.name}=DIR")
            t.add_argument("--preset", default=conv.preset,
                           help=f"whose methods.{method.name} sizes the architecture and names the base model")
            t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
            t.add_argument("--verbose", action="store_true")
            t.set_defaults(method=method.name, converter=conv)
    w = sub.add_parser("watermark", help="say whether images carry facegen's invisible watermark (JSON on stdout)")
    w.add_argument("files", nargs="+")
    w.add_argument("--verbose", action="store_true")
    return p


def _quiet(args) -> None:
    """Library chatter off unless --verbose."""
    if args.verbose:
        return
    from facegen.cluster.workers import quiet_libraries

    warnings.filterwarnings("ignore")
    quiet_libraries()


def output_paths(out: str, n: int) -> list[Path]:
    path = Path(out)
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp"):
        raise FacegenError(f"--out {out}: use a .png, .jpg or .webp file name")
    if path.is_dir():
        raise FacegenError(f"--out {out} is a directory: give a file name such as {path / 'portrait.png'}")
    if n == 1:
        return [path]
    return [path.with_name(f"{path.stem}-{i}{path.suffix}") for i in range(1, n + 1)]


def save_images_atomically(images, paths: list[Path]) -> None:
    """Write every image under a temporary name first, then rename them all: no half-written output."""
    tmps = []
    try:
        for img, path in zip(images, paths):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=path.suffix, dir=path.parent)
            os.close(fd)
            tmps.append(tmp)
            img.save(tmp)
        for tmp, path in zip(tmps, paths):
            os.replace(tmp, path)
    finally:
        for tmp in tmps:
            Path(tmp).unlink(missing_ok=True)


def cmd_generate(args) -> int:
    from facegen.core.config import load_preset
    from facegen.core.methods.base import check_sampling

    check_sampling(SAMPLING_FLAGS, steps=args.steps, guidance_scale=args.guidance, num_images=args.num_images)
    paths = output_paths(args.out, args.num_images)
    preset = load_preset(args.preset, args.set)
    method = get_method(args.method or (preset.method_names or NAMES)[0])
    check_sampling(SAMPLING_FLAGS, size_multiple=method.size_multiple, width=args.width, height=args.height)
    section = preset.method(method.name)  # the preset offers it
    section.check_model(args.model, preset.face)
    if args.model:
        from facegen.core.models.export import check_export

        check_export(args.model)
    # The request resolved once, before diffusers is imported or a model loads: the pipelines' own input checks,
    # the sampling defaults, the scene-switch rules.
    sampling = section.sampling.resolve(args.steps, args.guidance, args.width, args.height, args.negative_prompt)
    method.check_inputs(args.prompt, sampling.negative_prompt, sampling.height, sampling.width)
    rules = control_rules(args, method.name, section, sampling)
    # An unreadable or faceless photo fails now (in a second or two), not after the models have loaded; the pipeline
    # reuses this analyzer, and its face encoder turns these detections into the identity (as the service does).
    from facegen.core.face.analyzer import FaceAnalyzer
    from facegen.core.methods.pipeline_utils import detect_faces

    analyzer = FaceAnalyzer(preset.face)
    detections = detect_faces(analyzer, args.face)
    pose = None  # a head box is posed as the --pose-from photo's face, else the (first) --face photo's
    if rules is not None and rules.head_box is not None:
        face = analyzer.largest(args.pose_from, "the pose photo")[1] if args.pose_from else detections[0][1]
        pose = (face.kps, face.bbox)
    import torch

    from facegen.core.plan import GenerationPlan

    _quiet(args)

    pipe = method.load_pipeline(preset, args.model, face_analyzer=analyzer)
    if not args.verbose:
        pipe.set_progress_bar_config(disable=True)
    identity = pipe.face_encoder.from_detections(detections)  # several --face photos of one person are averaged
    with warnings.catch_warnings(record=True) as notes:
        warnings.simplefilter("always", ControlImageResized)
        control = None if rules is None else pipe.make_control(rules, sampling.width, sampling.height, 1, pose)
        plan = GenerationPlan.from_sampling(sampling, args.num_images, control)
        out = pipe(prompt=args.prompt, identity=identity, plan=plan, generator=torch.Generator().manual_seed(args.seed))
    for note in notes:
        if issubclass(note.category, ControlImageResized):
            print(f"note: {note.message}", file=sys.stderr)
    save_images_atomically(out.images, paths)
    for path in paths:
        print(path)
    return 0


def control_rules(args, method: str, section, sampling):
    """The scene-switch flags checked (`facegen.core.control.resolve`, once) before any model loads: the ControlPlan
    the pipeline makes the control image from, or None without control flags."""
    from facegen.core.control import parse_head_box, resolve
    from facegen.core.face.images import load_image

    rules = resolve(section.controlnet, sampling.width, sampling.height,
                    parse_head_box(args.head_box) if args.head_box else None, args.pose_from, args.control_image,
                    args.control_scale, args.control_start, args.control_end, names=CONTROL_FLAGS,
                    key=f"methods.{method}.controlnet")
    for photo in (args.pose_from, args.control_image):
        if rules is not None and photo:
            load_image(photo)  # unreadable now, not after the models have loaded
    return rules


def cmd_faces(args) -> int:
    from facegen.core.config import load_preset
    from facegen.core.face.analyzer import FaceAnalyzer

    preset = load_preset(args.preset, args.set)
    _quiet(args)
    analyzer = FaceAnalyzer(preset.face)
    report, largest = [], []
    for photo in args.photos:
        faces = analyzer.detect(photo)
        report.append({"path": photo, "faces": [f.to_json() for f in faces]})
        largest.append(faces[0].embedding if faces else None)
    metric = analyzer.metric
    similarity = [[None if a is None or b is None else round(metric.similarity(a, b), 4) for b in largest]
                  for a in largest]
    print(json.dumps({"images": report, "similarity": similarity, "metric": metric.name,
                      "same_person": metric.same_person}, indent=2))
    return 0


def cmd_convert(args) -> int:
    from facegen.core.config import load_preset
    from facegen.core.face.registry import check_insightface_profile

    preset = load_preset(args.preset, args.set)
    preset.method(args.method)
    # what a conversion makes is published weights: insightface-profile only, said before anything is read
    check_insightface_profile(preset.face, f"a converted {args.method} model (ByteDance's published weights)")
    files = {flag: getattr(args, flag) for flag, _, _ in args.converter.files}
    for flag, path in files.items():
        if path is not None and not Path(path).expanduser().is_file():
            raise FacegenError(f"--{flag} {path}: no such file")
    _quiet(args)
    for path in args.converter.run(out=args.out, preset=preset, **files):
        print(f"{path}  {path.stat().st_size / 2**20:.1f} MiB")
    return 0


def cmd_watermark(args) -> int:
    from facegen.cluster.serving.watermark import inspect
    from facegen.core.face.images import load_image

    reports = []
    for path in args.files:
        load_image(path)  # a clear error for a missing or unreadable file
        reports.append(inspect(path))
    print(json.dumps(reports if len(reports) > 1 else reports[0], indent=2))
    return 0 if all(r["watermarked"] for r in reports) else 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        commands = {"generate": cmd_generate, "faces": cmd_faces, "convert": cmd_convert, "watermark": cmd_watermark}
        return commands[args.command](args)
    except FacegenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

