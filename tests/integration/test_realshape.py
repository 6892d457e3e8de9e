"""The real-shape tier (`pytest -m realshape`, run by `make test` after the fast tier): the real presets' code paths
through the real entry points, with only the base models swapped for random weights in the public models' exact
shapes (random:sd21-base, random:sdxl-base) and buffalo_s standing in for the real presets' face packs (no network).
Small canvases and one step keep it inside the CI budget; the models, their memory and their loading are real-size."""
import subprocess
import sys

import pytest
from PIL import Image

pytestmark = pytest.mark.realshape


@pytest.mark.parametrize("preset, method, base, extra, prompt", [
    ("dreamidentity-sd21", "dreamidentity", "random:sd21-base", [], "S* as a chef"),
    # bf16 keeps SDXL-sized weights under the tier's memory budget on a CPU (fp32 would need ~14 GB)
    ("faceclip-sdxl", "faceclip", "random:sdxl-base", ["--set", "methods.faceclip.dtype=bf16"], "a chef in a kitchen"),
])
def test_cli_generate_at_real_shapes(preset, method, base, extra, prompt, photos, tmp_path):
    out = tmp_path / f"{method}.png"
    r = subprocess.run([sys.executable, "-m", "facegen", "generate", "--preset", preset, "--method", method,
                        "--set", f"methods.{method}.base_model={base}", "--set", "face.model=buffalo_s", *extra,
                        "--face", str(photos["astronaut"]), "--prompt", prompt, "--width", "64", "--height", "72",
                        "--steps", "1", "--out", str(out)], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert Image.open(out).size == (64, 72)


SD21 = ["--preset", "dreamidentity-sd21", "--set", "methods.dreamidentity.base_model=random:sd21-base",
        "--set", "face.model=buffalo_s", "--set", "clip.pretrained=null"]
# Ray resources for a 2-CPU box with one declared GPU: every stage's actor must fit beside the others.
SMALL_BOX = [f"--set=data.{stage}.{key}={value}" for stage in ("generate", "align", "edit", "score", "latents")
             for key, value in (("num_cpus", 0.25), ("num_gpus", 0 if stage == "align" else 0.25), ("batch_size", 2))]


@pytest.fixture(scope="module")
def sd21_chain(ray_cluster, load_job, photos, tmp_path_factory):
    """build_data → train_m2 (DeepSpeed) → evaluate on the dreamidentity-sd21 preset with random:sd21-base."""
    root = tmp_path_factory.mktemp("realshape")
    data, train, evaluation, faces = root / "data", root / "train", root / "eval", root / "faces"
    faces.mkdir()
    (faces / "astronaut.png").write_bytes(photos["astronaut"].read_bytes())
    assert load_job("build_data").main([*SD21, *SMALL_BOX, "--output", str(data), "--num-identities", "1",
                                        "--set", "data.max_prompts=2", "--set", "data.steps=1", "--set", "data.width=136",
                                        "--set", "data.height=136", "--set", "data.min_face_size=64",
                                        "--set", "data.assume_aligned=true", "--set", "data.keep_fraction=1.0",
                                        "--set", "data.write.num_cpus=0.25"]) == 0
    assert load_job("train_m2").main([*SD21, "--data", str(data), "--output", str(train), "--strategy", "deepspeed",
                                      "--max-steps", "1", "--set", "train.batch_size=1", "--set", "train.resolution=64",
                                      "--set", "train.cpus_per_worker=0.25", "--set", "train.materialize=true"]) == 0
    assert load_job("evaluate").main([*SD21, "--model", str(train / "model"), "--faces", str(faces),
                                      "--output", str(evaluation), "--method", "dreamidentity",
                                      "--set", "eval.max_prompts=1", "--set", "eval.images_per_prompt=1",
                                      "--set", "eval.steps=1", "--set", "eval.width=64", "--set", "eval.height=64",
                                      "--set", "eval.num_gpus=0.25", "--set", "eval.num_cpus=0.25"]) == 0
    return data, train, evaluation


SDXL = ["--preset", "faceclip-sdxl", "--set", "methods.faceclip.base_model=random:sdxl-base",
        "--set", "face.model=buffalo_s", "--set", "clip.pretrained=null"]


def test_faceclip_alignment_training_export_and_cli_at_real_shapes(sd21_chain, load_job, photos, tmp_path):
    """train_faceclip (alignment stage) on SDXL-base shapes — the UNet is not even loaded for it — then the exported
    encoder (both SDXL text towers, the paper-sized face ViT) drawn with by the CLI."""
    import json

    data, _, _ = sd21_chain
    out = tmp_path / "train_faceclip"
    assert load_job("train_faceclip").main([*SDXL, "--data", str(data), "--output", str(out), "--max-steps", "1",
                                            "--set", "train.batch_size=2", "--set", "train.resolution=64",
                                            "--set", "train.cpus_per_worker=0.25"]) == 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["vit"]["depth"] == 24 and config["clip_embed_dim"] == 768
    image = tmp_path / "fc.png"
    r = subprocess.run([sys.executable, "-m", "facegen", "generate", *SDXL, "--set", "methods.faceclip.dtype=bf16",
                        "--method", "faceclip", "--model", str(out / "model"), "--face", str(photos["astronaut"]),
                        "--prompt", "a chef", "--width", "64", "--height", "64", "--steps", "1", "--out", str(image)],
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert Image.open(image).size == (64, 64)


def test_sd21_data_training_and_evaluation_at_real_shapes(sd21_chain):
    import json

    import pyarrow.parquet as pq

    data, train, evaluation = sd21_chain
    rows = pq.read_table(next((data / "selfaug").glob("*.parquet"))).to_pandas()
    assert len(rows) == 2 and len(rows["face_embedding"].iloc[0]) == 512
    config = json.loads((train / "model" / "config.json").read_text())
    assert config["token_dim"] == 1024 and config["vit"]["depth"] == 24  # the paper-sized M², read from SD2.1's shapes
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert metrics["overall"]["images"] == 1 and metrics["model"].endswith("model")


def test_service_draws_both_methods_at_real_shapes(ray_cluster, free_port, photos, tmp_path):
    """`serve.app:deploy` on the production preset's code path (both methods, each on its own base model) with the
    real-shape random models, bf16 to fit the box: one HTTP request per method."""
    import base64
    import importlib.util
    import io
    import json
    from pathlib import Path

    import requests
    from ray import serve

    preset = tmp_path / "realshape.yaml"
    preset.write_text(
        "extends: production\nname: production-realshape\nface: {model: buffalo_s}\nmethods:\n"
        "  dreamidentity: {base_model: 'random:sd21-base', dtype: bf16}\n"
        "  faceclip: {base_model: 'random:sdxl-base', dtype: bf16}\n")
    spec = importlib.util.spec_from_file_location("serve_app", Path(__file__).resolve().parents[2] / "serve" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(app.deploy({"preset": str(preset), "keys": []}), name="realshape", route_prefix="/", blocking=False)
    url = f"http://127.0.0.1:{port}"
    try:
        models = requests.get(url + "/v1/models", timeout=900).json()["models"]
        assert models["dreamidentity"]["base_model"] == "random:sd21-base" and models["faceclip"]["dtype"] == "bf16"
        face = base64.b64encode(photos["astronaut"].read_bytes()).decode()
        for method, prompt in (("dreamidentity", "S* as a chef"), ("faceclip", "a chef in a kitchen")):
            body = {"method": method, "face_image": face, "prompt": prompt, "steps": 1, "width": 256, "height": 256, "seed": 1}
            r = requests.post(url + "/v1/generate", data=json.dumps(body), headers={"Content-Type": "application/json"},
                              timeout=900)
            assert r.status_code == 200, r.text
            (image,) = r.json()["images"]
            assert Image.open(io.BytesIO(base64.b64decode(image))).size == (256, 256)
    finally:
        serve.shutdown()
