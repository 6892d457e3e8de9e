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

