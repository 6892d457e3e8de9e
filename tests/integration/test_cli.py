"""The command line as a user runs it: a subprocess, real photos, real files."""
import json
import subprocess
import sys

import pytest
from conftest import REPO
from PIL import Image


def run(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "facegen", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_generate_writes_pictures(photos, tmp_path):
    out = tmp_path / "me.png"
    r = run("generate", "--preset", "tiny", "--method", "dreamidentity", "--face", photos["astronaut"],
            "--face", photos["tom_hanks"], "--prompt", "S* as a chef", "--out", out, "--num-images", "2",
            "--steps", "3", "--width", "64", "--height", "80", "--seed", "5")
    assert r.returncode == 0, r.stderr
    for name in ("me-1.png", "me-2.png"):
        assert Image.open(tmp_path / name).size == (64, 80)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_scene_switch_head_box_and_control_image(photos, tmp_path):
    """--head-box puts the head where asked, turned as the --pose-from photo's face; a control image of another size
    is resized, and the CLI says so."""
    out = tmp_path / "box.png"
    r = run("generate", "--method", "dreamidentity", "--face", photos["tom_hanks"], "--prompt", "S* as a chef",
            "--head-box", "24,16,72,88", "--pose-from", photos["astronaut"], "--out", out, "--steps", "2")
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (128, 128)
    out = tmp_path / "control.png"
    r = run("generate", "--method", "faceclip", "--face", photos["astronaut"], "--prompt", "a chef",
            "--control-image", photos["group"], "--control-scale", "0.8", "--out", out, "--steps", "2")
    assert r.returncode == 0, r.stderr
    assert "note: the control image" in r.stderr and "resized to the 128×96 output" in r.stderr
    assert Image.open(out).size == (128, 96)


def test_faces_reports_boxes_and_similarity(photos):
    r = run("faces", photos["group"], photos["astronaut"], photos["no_face"])
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert [len(i["faces"]) for i in report["images"]] == [6, 1, 0]
    sim = report["similarity"]
    assert sim[1][1] == pytest.approx(1.0, abs=1e-3) and sim[0][1] < 0.5 and sim[2][0] is None
    assert {"bbox", "score"} == set(report["images"][1]["faces"][0])
    assert report["metric"] == "ArcFace cosine" and report["same_person"] == 0.4


def test_faces_with_dlib_ranks_the_same_person_first(photos, tmp_path):
    """`faces --set face.model=dlib`: Yao Ming's portrait against three heads cut from his team's photo (his own,
    No. 13, and two team-mates'): his own is ranked above both strangers."""
    team = Image.open(photos["team"]).convert("RGB")
    heads = {"yao": (680, 100, 800, 240), "mate_a": (290, 380, 410, 520), "mate_b": (820, 125, 940, 265)}
    paths = []
    for name, box in heads.items():
        paths.append(tmp_path / f"{name}.png")
        team.crop(box).resize((240, 280)).save(paths[-1])
    r = run("faces", "--set", "face.model=dlib", photos["yao"], *paths)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert [len(i["faces"]) for i in report["images"]] == [1, 1, 1, 1]
    sim = report["similarity"][0]
    assert sim[1] > max(sim[2], sim[3]), sim
    assert report["metric"].startswith("dlib") and report["same_person"] == pytest.approx(0.4)


@pytest.mark.parametrize(
    "case",
    ["not_an_image", "no_face", "no_placeholder", "unknown_key", "bad_size", "unknown_preset", "box_off_canvas",
     "pose_photo_without_face", "control_image_not_an_image"],
)
def test_bad_input_is_one_line_no_traceback_no_file(case, photos, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"these bytes are not a picture")
    face, prompt, extra = photos["astronaut"], "S* as a chef", []
    if case == "not_an_image":
        face = junk
    elif case == "no_face":
        face = photos["no_face"]
    elif case == "no_placeholder":
        prompt = "a chef"
    elif case == "unknown_key":
        extra = ["--set", "methods.dreamidentity.encoder.depthh=3"]
    elif case == "bad_size":
        extra = ["--width", "100"]
    elif case == "unknown_preset":
        extra = ["--preset", "gigantic"]
    elif case == "box_off_canvas":
        extra = ["--head-box", "100,10,64,64"]  # the tiny preset draws 128×128
    elif case == "pose_photo_without_face":
        extra = ["--head-box", "32,24,64,80", "--pose-from", str(photos["no_face"])]
    elif case == "control_image_not_an_image":
        extra = ["--control-image", str(junk)]
    out = tmp_path / "out.png"
    r = run("generate", "--face", face, "--prompt", prompt, "--out", out, "--steps", "2", *extra)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert not out.exists() and not list(tmp_path.glob("*.png"))


def test_platform_module_is_not_shadowed():
    """Ray puts the working dir first on sys.path; platform/ must stay a plain folder, not a package."""
    code = "import platform; platform.system(); import ray; import facegen; print(platform.system())"
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() in ("Linux", "Darwin", "Windows")
    assert not (REPO / "platform" / "__init__.py").exists()


def test_convert_the_published_faceclip_then_generate_with_it(photos, official_checkpoint, tmp_path):
    """`convert faceclip-official` (files in the published format, tiny sizes), then `generate --model DIR` at a
    size that is any multiple of eight."""
    d, model = official_checkpoint["dir"], tmp_path / "faceclip-official"
    r = run("convert", "faceclip-official", "--encoder", d / "face_clip_encoder.pt", "--unet", d / "unet.pt",
            "--out", model, "--preset", "tiny")
    assert r.returncode == 0, r.stderr
    assert "model.safetensors" in r.stdout and "diffusion_pytorch_model.safetensors" in r.stdout
    out = tmp_path / "fc.png"
    r = run("generate", "--method", "faceclip", "--model", model, "--face", photos["group"], "--prompt",
            "a chef in a kitchen", "--out", out, "--steps", "2", "--width", "72", "--height", "40")
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (72, 40)
    # ByteDance's weights read insightface's ArcFace only: the open profile says so, before anything loads
    for argv in (["generate", "--preset", "tiny-open", "--method", "faceclip", "--model", model, "--face",
                  photos["group"], "--prompt", "a chef", "--out", tmp_path / "no.png"],
                 ["convert", "faceclip-official", "--encoder", d / "face_clip_encoder.pt", "--unet", d / "unet.pt",
                  "--out", tmp_path / "no", "--set", "face.model=dlib"]):
        r = run(*argv)
        assert r.returncode == 2 and "insightface-profile only" in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert not (tmp_path / "no.png").exists() and not (tmp_path / "no").exists()


@pytest.mark.parametrize("case", ["not_an_image", "no_face", "bad_size", "bad_model_dir", "official_without_model"])
def test_faceclip_bad_input(case, photos, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG but not really")
    face, extra = photos["astronaut"], []
    if case == "not_an_image":
        face = junk
    elif case == "no_face":
        face = photos["no_face"]
    elif case == "bad_size":
        extra = ["--height", "1001"]
    elif case == "bad_model_dir":
        extra = ["--model", tmp_path]
    elif case == "official_without_model":  # the published architecture has no fresh weights: convert first
        extra = ["--preset", "faceclip-official"]
    out = tmp_path / "out.png"
    r = run("generate", "--method", "faceclip", "--face", face, "--prompt", "a chef", "--out", out, "--steps", "2", *extra)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len([x for x in r.stderr.splitlines() if x.strip()]) == 1 and r.stderr.startswith("error: ")
    if case == "bad_model_dir":  # said before any model loads
        assert f"{tmp_path}: not an exported model (no config.json" in r.stderr
    assert not out.exists()


def test_facet5_from_the_command_line(photos, tmp_path):
    """FaceT5-FLUX from the command line (convert → --model: tests/unit/test_facet5.py): a fresh tiny encoder draws
    the largest face of a group photo; a side that is not a multiple of 16 is refused by its flag; the real preset
    without a converted encoder is refused before anything loads."""
    out = tmp_path / "t5.png"
    r = run("generate", "--method", "facet5", "--face", photos["group"], "--prompt", "a man on a rocky plateau",
            "--out", out, "--steps", "2", "--width", "80", "--height", "48", "--num-images", "1")
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (80, 48)
    r = run("generate", "--method", "facet5", "--face", photos["astronaut"], "--prompt", "a chef", "--out", out,
            "--width", "72")
    assert r.returncode == 2 and r.stderr.strip() == "error: --width must be a multiple of 16, got 72"
    r = run("generate", "--method", "facet5", "--preset", "facet5-flux", "--face", photos["astronaut"], "--prompt",
            "a chef", "--out", tmp_path / "no.png")
    assert r.returncode == 2 and "needs a converted FaceT5 encoder" in r.stderr and not (tmp_path / "no.png").exists()
