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
