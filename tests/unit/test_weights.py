import pytest
from facegen.errors import ModelNotFound
from facegen.weights import resolve_model, sha256_of


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
        resolve_model("stabilityai/stable-diffusion-2-1-base")  # real weights: offline, so it must fail clearly
    assert "stabilityai/stable-diffusion-2-1-base" in str(err.value) and "--set methods.<method>.base_model=DIR" in str(err.value)


def test_missing_local_dir_and_unknown_tiny():
    with pytest.raises(ModelNotFound, match="does not exist"):
        resolve_model("/no/such/model")
    with pytest.raises(ModelNotFound, match="unknown tiny model"):
        resolve_model("tiny:sd15")


def test_real_layout_loads_through_from_pretrained(tmp_path):
    """A local directory in the hub's layout (here: the tiny model copied) loads like a downloaded model."""
    import shutil

    from facegen.weights import load_sd21_components

    local = tmp_path / "my-sd21"
    shutil.copytree(resolve_model("tiny:sd21"), local)
    comps = load_sd21_components(str(local))
    assert type(comps["unet"]).__name__ == "UNet2DConditionModel"
    with pytest.raises(ModelNotFound, match="not a Stable Diffusion model"):
        load_sd21_components(str(tmp_path))
