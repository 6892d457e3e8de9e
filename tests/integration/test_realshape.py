"""The real-shape tier (`pytest -m realshape`, run by `make test` after the fast tier): the real presets' code paths
through the real entry points — CLI, jobs, evaluation, service — with only what cannot be had offline swapped
(tests/integration/presets/realshape.yaml: random weights in the public base models' exact shapes, a random CLIP
ViT-L-14, buffalo_s for the face packs). Small canvases and one step keep it inside the CI budget; the models, their
memory and their loading are real-size.

fp32 throughout: this CPU has no bf16/fp16 matrix units (bf16 matmul measured 0.6 GFLOP/s against fp32's 112), so
bf16 would only be slower, not smaller where it counts. SDXL-sized weights in fp32 are ~14 GB, so one SDXL model is in
memory at a time: each service below serves one method (the two-method topology is the fast tier's serve tests)."""
import base64
import io
import json
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from PIL import Image

pytestmark = pytest.mark.realshape

PRESET = str(Path(__file__).parent / "presets" / "realshape.yaml")
REPO = Path(__file__).resolve().parents[2]


def losses(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]


def cli_generate(method: str, face: Path, prompt: str, out: Path, *extra: str) -> Image.Image:
    r = subprocess.run([sys.executable, "-m", "facegen", "generate", "--preset", PRESET, "--method", method,
                        "--face", str(face), "--prompt", prompt, "--width", "64", "--height", "72", "--steps", "1",
                        "--out", str(out), *extra], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    return Image.open(out)


@pytest.mark.parametrize("preset, method, base, prompt, control", [
    # SD2.1 with scene switch: a ControlNet in the public OpenPose one's shapes, the head box posed as Tom Hanks; the
    # open profile's preset, whose face stack (dlib's CC0 files) is real here, not swapped
    ("dreamidentity-sd21-open", "dreamidentity", "random:sd21-base", "S* as a chef",
     ["--set", "methods.dreamidentity.controlnet.model=random:controlnet-sd21-base", "--head-box", "8,8,40,48"]),
    # (SDXL's ControlNet adds 5 GB in fp32 to a 17 GB generator: too much beside Ray on this 24 GB box)
    ("faceclip-sdxl", "faceclip", "random:sdxl-base", "a chef in a kitchen", []),
])
def test_cli_generate_at_real_shapes(preset, method, base, prompt, control, photos, tmp_path):
    """The shipped preset itself, only the base model, the insightface pack (and the ControlNet) swapped."""
    out = tmp_path / f"{method}.png"
    pose = ["--pose-from", str(photos["tom_hanks"])] if control else []
    face = [] if preset.endswith("-open") else ["--set", "face.model=buffalo_s"]
    r = subprocess.run([sys.executable, "-m", "facegen", "generate", "--preset", preset, "--method", method,
                        "--set", f"methods.{method}.base_model={base}", *face,
                        "--face", str(photos["astronaut"]), "--prompt", prompt, "--width", "64", "--height", "72",
                        "--steps", "1", "--out", str(out), *control, *pose], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert Image.open(out).size == (64, 72)


def test_published_faceclip_at_full_size(photos, tmp_path):
    """ByteDance's checkpoint format at its real size — random weights in 16 bits like the published files (a 3.15 GB
    encoder, a 5.1 GB SDXL UNet) — through `convert faceclip-official`, then `generate` with the shipped
    `faceclip-official` preset (only the base model, the face pack and the precision swapped)."""
    import gc

    import torch
    from diffusers import UNet2DConditionModel
    from facegen.core.methods.faceclip.config import OfficialFaceCLIPConfig
    from facegen.core.methods.faceclip.official import OfficialFaceCLIPEncoder
    from facegen.core.weights import resolve_model

    with torch.device("meta"):
        encoder = OfficialFaceCLIPEncoder(OfficialFaceCLIPConfig())
    encoder = encoder.to_empty(device="cpu").to(torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in encoder.state_dict().items():
            if "running_var" in name:
                t.fill_(1)
            elif t.is_floating_point():
                t.normal_(0, 0.02, generator=g)
            else:
                t.zero_()
    torch.save({"model." + k: v for k, v in encoder.state_dict().items()}, tmp_path / "face_clip_encoder.pt")
    del encoder
    unet = UNet2DConditionModel.from_pretrained(resolve_model("random:sdxl-base") / "unet", torch_dtype=torch.float16)
    torch.save(unet.state_dict(), tmp_path / "unet.pt")
    del unet
    gc.collect()
    assert (tmp_path / "face_clip_encoder.pt").stat().st_size > 3.1e9  # 1.573 billion 16-bit elements
    model = tmp_path / "faceclip-official"
    r = subprocess.run([sys.executable, "-m", "facegen", "convert", "faceclip-official", "--encoder",
                        str(tmp_path / "face_clip_encoder.pt"), "--unet", str(tmp_path / "unet.pt"), "--out", str(model),
                        "--set", "methods.faceclip.base_model=random:sdxl-base"],
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("face_clip_encoder.pt", "unet.pt"):
        (tmp_path / name).unlink()
    out = tmp_path / "official.png"
    r = subprocess.run([sys.executable, "-m", "facegen", "generate", "--preset", "faceclip-official", "--model", str(model),
                        "--set", "methods.faceclip.base_model=random:sdxl-base", "--set", "face.model=buffalo_s",
                        "--set", "methods.faceclip.dtype=fp32", "--face", str(photos["astronaut"]),
                        "--prompt", "a woman in a denim shirt on a desert plateau", "--width", "64", "--height", "72",
                        "--steps", "1", "--out", str(out)], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert Image.open(out).size == (64, 72)


FACET5_SLIM = ["--set", "methods.facet5.base_model=random:flux-slim", "--set", "methods.facet5.encoder.t5.layers=2",
               "--set", "methods.facet5.encoder.vit.depth=2", "--set", "methods.facet5.encoder.fuser.layers=1"]


def test_published_facet5_at_real_widths(photos, tmp_path):
    """FaceT5-FLUX's published file format at the real widths — T5 v1.1 XXL's 4096 / 64 heads / 10240, CLIP-L, the
    face ViT-L, the fuser at 4096; FLUX's transformer at 3072 / 24 heads / joint 4096 / pooled 768 / 64 channels —
    with 2 T5 layers, 2 ViT blocks, 1 fuser layer and 1 + 1 DiT blocks so it fits this 24 GB box, random weights in
    bf16 like the published files: `convert facet5-flux`, then `generate` with the shipped `facet5-flux` preset (only
    the depths, the base model, the face pack and the precision swapped)."""
    import torch
    from diffusers import FluxTransformer2DModel
    from facegen.core.config import load_preset
    from facegen.core.methods.facet5.encoder import FaceT5FluxEncoder
    from facegen.core.weights import resolve_model

    config = load_preset("facet5-flux", FACET5_SLIM[1::2]).method("facet5").encoder
    assert (config.t5.d_model, config.t5.heads, config.t5.d_ff, config.clip_l.hidden) == (4096, 64, 10240, 768)
    with torch.device("meta"):
        encoder = FaceT5FluxEncoder(config)
    encoder = encoder.to_empty(device="cpu").to(torch.bfloat16)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for t in encoder.state_dict().values():
            if t.is_floating_point():
                t.normal_(0, 0.02, generator=g)
            else:
                t.zero_()
    torch.save(encoder.state_dict(), tmp_path / "face_t5_encoder.pt")
    del encoder
    dit = FluxTransformer2DModel.from_pretrained(resolve_model("random:flux-slim") / "transformer", torch_dtype=torch.bfloat16)
    assert dit.config.joint_attention_dim == 4096 and dit.config.num_attention_heads * dit.config.attention_head_dim == 3072
    torch.save(dit.state_dict(), tmp_path / "dit.pt")
    del dit
    model = tmp_path / "facet5"
    r = subprocess.run([sys.executable, "-m", "facegen", "convert", "facet5-flux", "--encoder",
                        str(tmp_path / "face_t5_encoder.pt"), "--dit", str(tmp_path / "dit.pt"), "--out", str(model),
                        *FACET5_SLIM], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    for name in ("face_t5_encoder.pt", "dit.pt"):
        (tmp_path / name).unlink()
    out = tmp_path / "facet5.png"
    r = subprocess.run([sys.executable, "-m", "facegen", "generate", "--preset", "facet5-flux", "--method", "facet5",
                        "--model", str(model), *FACET5_SLIM, "--set", "face.model=buffalo_s",
                        "--set", "methods.facet5.dtype=fp32", "--face", str(photos["astronaut"]),
                        "--prompt", "a woman in a denim shirt on a desert plateau", "--width", "64", "--height", "80",
                        "--steps", "1", "--out", str(out)], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]
    assert Image.open(out).size == (64, 80)


@pytest.fixture(scope="module")
def realshape_data(ray_cluster, load_job, ffhq_folder, tmp_path_factory):
    """jobs/build_data.py with SD2.1-base-sized models: 2 identities × 2 edit prompts (all kept) + 2 FFHQ photos,
    VAE latents cached at 64 px."""
    root = tmp_path_factory.mktemp("realshape_data")
    ffhq = ffhq_folder(root)
    out = root / "data"
    assert load_job("build_data").main(["--preset", PRESET, "--output", str(out), "--num-identities", "2",
                                        "--ffhq", str(ffhq)]) == 0
    return out


def test_build_data_at_real_shapes(realshape_data):
    from facegen.cluster.data.schema import decode_latents
    from facegen.cluster.data.storage import Storage

    manifest = json.loads((realshape_data / "manifest.json").read_text())
    c = manifest["counts"]
    assert (c["generated"], c["scored"], c["kept"], c["ffhq_kept"]) == (2, 4, 4, 2), c
    storage = Storage.open(str(realshape_data))
    rows = storage.read_parquet(storage.list("selfaug", suffixes=(".parquet",))).to_pylist()
    assert len(rows) == 4
    latents = decode_latents(rows[0]["latents"], rows[0]["latents_shape"])
    assert tuple(latents.shape) == (4, 8, 8)  # SD2.1's VAE: 4 channels, 1/8 of the 64-px target


@pytest.fixture(scope="module")
def m2_model(realshape_data, load_job, tmp_path_factory):
    """jobs/train_m2.py --strategy deepspeed: the paper-sized M² encoder against the SD2.1-sized UNet, 2 steps."""
    out = tmp_path_factory.mktemp("m2") / "run"
    assert load_job("train_m2").main(["--preset", PRESET, "--data", str(realshape_data), "--output", str(out),
                                      "--num-workers", "1", "--strategy", "deepspeed", "--max-steps", "2"]) == 0
    curve = losses(out)
    assert len(curve) == 2 and all(v == v for v in curve)  # finite
    return out / "model"


def test_trained_m2_is_drawn_with_by_the_cli(m2_model, photos, tmp_path):
    from facegen.core.methods.dreamidentity.encoder import M2Encoder

    encoder = M2Encoder.from_pretrained(m2_model)
    assert encoder.m2_config.vit.depth == 24 and encoder.m2_config.token_dim == 1024  # paper-sized, SD2.1's text width
    img = cli_generate("dreamidentity", photos["astronaut"], "S* as a chef", tmp_path / "m2.png",
                       "--model", str(m2_model))
    assert img.size == (64, 72)


def test_evaluate_trained_m2(m2_model, ray_cluster, load_job, photos, tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    shutil.copy(photos["astronaut"], faces / "astronaut.png")
    out = tmp_path / "eval"
    assert load_job("evaluate").main(["--preset", PRESET, "--model", str(m2_model), "--faces", str(faces),
                                      "--output", str(out), "--method", "dreamidentity"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["overall"]["images"] == 1 and set(m["per_face"]) == {"astronaut"}
    assert Image.open(out / "grids" / "astronaut.png").size[0] > 0


@pytest.fixture(scope="module")
def faceclip_model(realshape_data, load_job, tmp_path_factory):
    """jobs/train_faceclip.py, alignment stage, at SDXL-base shapes: the paper-sized FaceCLIP encoder around
    SDXL-sized text towers, aligned against a ViT-L-14 CLIP, 2 steps. (The diffusion stage with a LoRA UNet is not in
    this tier: in fp32 its worker holds SDXL's UNet beside the encoder, CLIP and optimizer, ~20 GB, more than this box
    has beside Ray; the tiny tier runs it, and the bf16-frozen-base LoRA path is unit-tested.)"""
    out = tmp_path_factory.mktemp("faceclip") / "align"
    assert load_job("train_faceclip").main(["--preset", PRESET, "--data", str(realshape_data), "--output", str(out),
                                            "--num-workers", "1", "--max-steps", "2",
                                            "--set", "train.batch_size=2"]) == 0
    curve = losses(out)
    assert len(curve) == 2 and all(v == v for v in curve)
    return out / "model"


def test_trained_faceclip_is_drawn_with_by_the_cli(faceclip_model, photos, tmp_path):
    config = json.loads((faceclip_model / "config.json").read_text())  # the export, read without loading 4 GB
    assert json.loads((faceclip_model / "text_encoder_2" / "config.json").read_text())["hidden_size"] == 1280
    assert config["_class_name"] == "FaceCLIPEncoder" and config["vit"]["depth"] == 24  # the paper-sized face ViT
    img = cli_generate("faceclip", photos["astronaut"], "a chef in a kitchen", tmp_path / "fc.png",
                       "--model", str(faceclip_model))
    assert img.size == (64, 72)


def sdxl_equality() -> None:
    """The body of the test below, run in a child process (see there)."""
    import numpy as np
    import torch
    from diffusers import StableDiffusionXLPipeline
    from facegen.core.methods import load_pipeline
    from facegen.core.methods.dreamidentity.pipeline import IdTokens

    pipe = load_pipeline("dreamidentity-sdxl", PRESET)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.m2_encoder.m2_config.token_dim == 768 + 1280
    rows = []
    for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = tokenizer("red hat", add_special_tokens=False).input_ids
        rows.append(encoder.get_input_embeddings().weight[ids].detach().clone())
    kw = dict(num_inference_steps=1, width=64, height=64, output_type="np")
    ours = pipe("S* as a chef", identity=IdTokens(torch.cat(rows, dim=-1)), generator=torch.Generator().manual_seed(2),
                **kw).images
    stock = StableDiffusionXLPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, text_encoder_2=pipe.text_encoder_2,
                                      tokenizer=pipe.tokenizer, tokenizer_2=pipe.tokenizer_2, unet=pipe.unet,
                                      scheduler=pipe.scheduler, add_watermarker=False)
    stock.set_progress_bar_config(disable=True)
    theirs = stock("red hat as a chef", guidance_scale=pipe.config.guidance_scale,
                   generator=torch.Generator().manual_seed(2), **kw).images
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_dreamidentity_sdxl_equals_diffusers_sdxl_at_real_shapes():
    """M² writing S* into SDXL-base-sized towers (CLIP-L 768 + bigG 1280): with S* holding two real words' rows, the
    picture equals diffusers' StableDiffusionXLPipeline on the prompt with those words (64 px, one step, fp32).

    In a child process: freed, a 14 GB SDXL-sized model stays in this process's heap (glibc keeps it; CI measured
    10.9 GB resident after `del` + `gc.collect()`), and the SDXL training worker that comes next would then not fit."""
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
            "import test_realshape; test_realshape.sdxl_equality()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stderr[-3000:]


@pytest.fixture(scope="module")
def m2_sdxl_model(realshape_data, load_job, tmp_path_factory):
    """jobs/train_m2.py --method dreamidentity-sdxl: the paper-sized M² against the SDXL-base-sized UNet and towers
    (the set drawn by SD 2.1: its cached latents are not SDXL's, so the SDXL VAE encodes the targets), 1 step."""
    out = tmp_path_factory.mktemp("m2_sdxl") / "run"
    assert load_job("train_m2").main(["--preset", PRESET, "--method", "dreamidentity-sdxl", "--data", str(realshape_data),
                                      "--output", str(out), "--num-workers", "1", "--max-steps", "1"]) == 0
    curve = losses(out)
    assert len(curve) == 1 and all(v == v for v in curve)
    return out / "model"


def test_trained_m2_sdxl_is_drawn_with_by_the_cli(m2_sdxl_model, photos, tmp_path):
    from facegen.core.methods.dreamidentity.encoder import M2Encoder

    encoder = M2Encoder.from_pretrained(m2_sdxl_model)
    assert encoder.m2_config.vit.depth == 24 and encoder.m2_config.token_dim == 768 + 1280
    img = cli_generate("dreamidentity-sdxl", photos["astronaut"], "S* as a chef", tmp_path / "m2xl.png",
                       "--model", str(m2_sdxl_model))
    assert img.size == (64, 72)


@contextmanager
def service(method: str, model: Path, port: int):
    """`serve run serve.app:deploy preset=<realshape> methods=<method> <method>=<model>` on the session's Ray."""
    import importlib.util

    from ray import serve

    spec = importlib.util.spec_from_file_location("serve_app", REPO / "serve" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # Without ControlNets: a generator loads its configured one when it starts, and an SDXL-sized ControlNet in fp32
    # (~5 GB) beside the SDXL-sized generator would not fit this box (scene switch at real shapes: the CLI test).
    import tempfile

    import yaml

    preset = Path(tempfile.mkdtemp()) / "realshape-serve.yaml"
    preset.write_text(yaml.safe_dump({"extends": [PRESET], "name": "realshape", "methods": {
        m: {"controlnet": {"model": None}} for m in ("dreamidentity", "faceclip", "dreamidentity-sdxl")}}))
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(module.deploy({"preset": str(preset), "methods": method, method: str(model), "keys": ["k"]}),
              name="realshape", route_prefix="/", blocking=False)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


TRAINED = {"dreamidentity": "m2_model", "faceclip": "faceclip_model", "dreamidentity-sdxl": "m2_sdxl_model"}
BASES = {"dreamidentity": "random:sd21-base", "faceclip": "random:sdxl-base", "dreamidentity-sdxl": "random:sdxl-base"}


@pytest.mark.parametrize("method, prompt", [("dreamidentity", "S* as a chef"), ("faceclip", "a chef in a kitchen"),
                                            ("dreamidentity-sdxl", "S* as a chef")])
def test_service_draws_with_the_trained_model(method, prompt, request, photos, free_port):
    from facegen.cluster.serving import watermark

    model = request.getfixturevalue(TRAINED[method])
    with service(method, model, free_port()) as url:
        body = {"method": method, "face_image": base64.b64encode(photos["astronaut"].read_bytes()).decode(),
                "prompt": prompt, "seed": 1, "steps": 1}
        r = requests.post(url + "/v1/generate", json=body, headers={"Authorization": "Bearer k"}, timeout=1500)
        assert r.status_code == 200, r.text
        img = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
        assert img.size == (256, 256) and watermark.detect(img) >= 0.9  # the service's smallest canvas
        info = requests.get(url + "/v1/models", headers={"Authorization": "Bearer k"}, timeout=60).json()
        assert info["models"][method]["base_model"] == BASES[method]
