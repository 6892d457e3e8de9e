"""jobs/evaluate.py through its real entry point on the tiny preset and real photos."""
import json
import math
import shutil

import pytest
from facegen.cluster.eval.report import LABEL_HEIGHT
from facegen.core.config import load_preset
from facegen.core.methods.dreamidentity.encoder import M2Encoder, with_token_dim
from PIL import Image


@pytest.fixture(scope="module")
def faces(photos, tmp_path_factory):
    d = tmp_path_factory.mktemp("faces")
    shutil.copy(photos["astronaut"], d / "astronaut.png")
    shutil.copy(photos["tom_hanks"], d / "hanks.png")
    Image.new("RGB", (200, 160), "gray").save(d / "no_face.jpg")  # a test photo with no face: skipped, reported
    return d


def test_evaluate_dreamidentity_exported_model(ray_cluster, load_job, faces, tmp_path):
    preset = load_preset("tiny")
    model = tmp_path / "model"
    M2Encoder.from_config_random(with_token_dim(preset.method("dreamidentity").encoder, 32)).save_pretrained(model)  # as exported
    out = tmp_path / "eval"
    assert load_job("evaluate").main(["--model", str(model), "--faces", str(faces), "--output", str(out),
                                      "--method", "dreamidentity", "--set", "eval.head_box=[32, 24, 64, 80]"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    n_prompts, n = len(preset.eval.protocol_prompts()), preset.eval.images_per_prompt
    o = m["overall"]
    assert o["images"] == 2 * n_prompts * n == len(json.loads((out / "scores.json").read_text()))
    assert all(math.isfinite(o[k]) for k in ("face_similarity", "text_alignment", "no_face_rate"))
    assert m["skipped_faces"] == ["no_face"] and set(m["per_face"]) == {"astronaut", "hanks"}
    assert all(v["images"] == 2 * n for v in m["per_prompt"].values()) and len(m["per_prompt"]) == n_prompts
    # The tiny model's random pictures hold no face: every image counts as no-face and scores 0, none is dropped.
    scores = json.loads((out / "scores.json").read_text())
    assert o["no_face"] == sum(s["no_face"] for s in scores)
    assert o["face_similarity"] == pytest.approx(sum(s["face_similarity"] for s in scores) / len(scores))
    assert all(s["face_similarity"] == 0 for s in scores if s["no_face"])
    cell = preset.eval.grid_cell
    for face in ("astronaut", "hanks"):
        grid = Image.open(out / "grids" / f"{face}.png")
        assert grid.size == (n * cell, cell + n_prompts * (cell + LABEL_HEIGHT))  # 4 images per prompt
    report = (out / "report.md").read_text()
    assert "S* as a chef" in report and "grids/hanks.png" in report and "no_face" in report
    assert (out / "face_similarity_vs_text_alignment.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "manifest.json").read_text())["counts"]["skipped_faces"] == 1
    # eval.head_box: every image drawn with the head in the box (posed as the test face), scored by the IoU of the
    # box and the detected face (0 where none is found, as with the tiny model's random pictures)
    assert m["head_box"] == [32, 24, 64, 80] and 0.0 <= o["head_box_iou"] <= 1.0
    assert all(0.0 <= s["head_box_iou"] <= 1.0 for s in scores)
    assert all("head_box_iou" in v for v in m["per_prompt"].values())
    assert "Scene switch: head box [32, 24, 64, 80]" in report


def test_evaluate_faceclip_is_deterministic(ray_cluster, load_job, faces, official_checkpoint, tmp_path):
    """The converted official FaceCLIP (--model DIR), with fixed seeds: two runs give the same scores."""
    job = load_job("evaluate")
    runs = []
    for i in range(2):
        out = tmp_path / f"fc{i}"
        assert job.main(["--faces", str(faces), "--output", str(out), "--method", "faceclip",
                         "--model", str(official_checkpoint["model"]),
                         "--set", "eval.max_prompts=2", "--set", "eval.images_per_prompt=2", "--set", "eval.steps=3"]) == 0
        runs.append(json.loads((out / "scores.json").read_text()))
    assert runs[0] == runs[1] and len(runs[0]) == 2 * 2 * 2


def test_evaluate_facet5(ray_cluster, load_job, faces, tmp_path):
    """FaceT5-FLUX through the evaluation job (a fresh tiny encoder): every face × prompt × image scored, the grids
    and the report written (the protocol's S* prompts read as "a person")."""
    out = tmp_path / "facet5"
    assert load_job("evaluate").main(["--faces", str(faces), "--output", str(out), "--method", "facet5",
                                      "--set", "eval.max_prompts=2", "--set", "eval.images_per_prompt=1",
                                      "--set", "eval.steps=2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    scores = json.loads((out / "scores.json").read_text())
    assert m["overall"]["images"] == 2 * 2 * 1 == len(scores) and set(m["per_face"]) == {"astronaut", "hanks"}
    assert all(math.isfinite(m["overall"][k]) for k in ("face_similarity", "text_alignment", "no_face_rate"))
    assert "S* as a chef" in (out / "report.md").read_text() and (out / "grids" / "hanks.png").is_file()


def test_evaluate_bad_input(ray_cluster, load_job, faces, tmp_path, capsys):
    job = load_job("evaluate")
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "face.png").write_bytes(b"not a png")
    cases = [(["--faces", str(tmp_path / "nope")], "no such directory"),
             (["--faces", str(empty)], "holds no images"),
             (["--faces", str(broken)], "face is not a readable image"),
             (["--faces", str(faces), "--model", str(empty)], "not an exported model"),
             (["--faces", str(faces), "--set", "eval.prompts=[a painting]"], "has no S*"),
             (["--faces", str(faces), "--set", "eval.head_box=[100, 100, 64, 64]"], "does not lie on the 128×128 image")]
    for i, (args, message) in enumerate(cases):
        assert job.main([*args, "--output", str(tmp_path / f"o{i}")]) == 2
        assert message in capsys.readouterr().err
        assert not (tmp_path / f"o{i}" / "metrics.json").exists()
