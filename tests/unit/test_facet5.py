"""FaceT5-FLUX's encoder against ByteDance's own code (fixtures made once from bytedance/FaceCLIP @ a984887 by
tests/fixtures/facet5_official/make_fixtures.py): the published state dict's names and shapes, key for key at full
size, and the outputs at reduced size."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from facegen.core.methods.faceclip.config import OfficialFuserConfig
from facegen.core.methods.facet5.config import ClipLConfig, FaceT5Config, T5StackConfig
from facegen.core.methods.facet5.encoder import FaceT5FluxEncoder
from facegen.core.models.config import FaceViTConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "facet5_official"


def small_config(meta: dict) -> FaceT5Config:
    s, t, v, c = meta["small"], meta["small"]["t5"], meta["small"]["vit"], meta["small"]["clip"]
    return FaceT5Config(
        t5=T5StackConfig(vocab_size=t["vocab_size"], d_model=s["d_model"], layers=t["num_layers"], heads=t["num_heads"],
                         d_kv=t["d_kv"], d_ff=t["d_ff"], max_length=t["max_sequence_length"]),
        clip_l=ClipLConfig(hidden=c["hidden_size"], layers=c["num_hidden_layers"], heads=c["num_attention_heads"],
                           intermediate=c["intermediate_size"], vocab_size=c["vocab_size"]),
        vit=FaceViTConfig(embed_dim=v["embed_dim"], depth=v["depth"], num_heads=v["num_heads"],
                          num_features=v["num_features"]),
        fuser=OfficialFuserConfig(layers=s["fuser"]["layers"], ffn=s["fuser"]["ffn"]))


@pytest.fixture(scope="module")
def fixture():
    return np.load(FIXTURES / "small.npz")


def test_the_published_checkpoint_layout_key_for_key():
    """Every key and shape of the official full-size wrapper (face_t5_encoder.pt's layout), on the meta device."""
    expected = json.loads((FIXTURES / "full_keys.json").read_text())
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in FaceT5FluxEncoder().state_dict().items()}
    assert ours == expected
    assert sum(int(np.prod(s)) for s in ours.values()) == 6_274_222_594


def test_outputs_match_the_official_code(fixture):
    meta = json.loads(str(fixture["meta"]))
    model = FaceT5FluxEncoder(small_config(meta)).eval()
    state = {k.removeprefix("state/"): torch.from_numpy(fixture[k]) for k in fixture.files if k.startswith("state/")}
    model.load_state_dict(state, strict=True)
    faces, t5_ids, clip_ids = (torch.from_numpy(fixture[k]) for k in ("faces", "t5_ids", "clip_ids"))
    with torch.no_grad():
        embeds, pooled = model(clip_ids, t5_ids, faces)
        negative, _ = model(clip_ids, t5_ids, torch.zeros_like(faces))
    assert embeds.shape == (2, meta["small"]["t5"]["max_sequence_length"], meta["small"]["d_model"])
    torch.testing.assert_close(embeds, torch.from_numpy(fixture["prompt_embeds"]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(negative, torch.from_numpy(fixture["negative_prompt_embeds"]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(pooled, torch.from_numpy(fixture["pooled"]), atol=1e-4, rtol=1e-4)
    assert not torch.allclose(embeds, negative, atol=1e-3)  # the face reaches the output


def test_each_face_is_encoded_alone_in_a_batch(fixture):
    """Two different people in one batch give each the embeddings they get alone (the official face layer would
    mix them; its weights mean one face at a time)."""
    meta = json.loads(str(fixture["meta"]))
    model = FaceT5FluxEncoder(small_config(meta)).eval()
    faces, t5_ids, clip_ids = (torch.from_numpy(fixture[k]) for k in ("faces", "t5_ids", "clip_ids"))
    with torch.no_grad():
        together, _ = model(clip_ids, t5_ids, faces)
        alone = torch.cat([model(clip_ids[i:i + 1], t5_ids[i:i + 1], faces[i:i + 1])[0] for i in range(2)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


# -- the method on tiny FLUX: the pipeline against diffusers', the export and the converter --------------------------
@pytest.fixture(scope="module")
def pipe():
    from facegen.core.methods import load_pipeline

    return load_pipeline("facet5", "tiny")


def test_a_fresh_encoder_reads_text_with_flux_own_t5(pipe):
    """The T5 stack (FlashT5's names, plain PyTorch) given tiny:flux's T5EncoderModel weights computes what
    transformers' T5 computes: the fresh encoder's text stream is FLUX's own T5."""
    from facegen.core.bases import FLUX

    t5 = FLUX.load("tiny:flux")["text_encoder_2"]
    _, ids = pipe.facet5_encoder.tokenize(["a portrait of a man in a city", "a woman at the beach"])
    with torch.no_grad():
        ours = pipe.facet5_encoder.encoder_2.t5_encoder(ids)
        theirs = t5(ids).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_the_image_equals_diffusers_flux_pipeline_given_the_same_conditioning(pipe, photos):
    """Denoising is diffusers' own FluxPipeline: loaded on its own from tiny:flux and given our conditioning (the
    negative included, true CFG 3.5, distilled guidance 1.0), it draws the same pixels."""
    from diffusers import FluxPipeline
    from facegen.core.weights import resolve_model

    identity = pipe.encode_identity(photos["astronaut"])
    conditioning = pipe.encode_conditioning(["a woman in a forest"], [""], identity)
    ours = pipe("a woman in a forest", identity=identity, num_inference_steps=3, output_type="np",
                generator=torch.Generator().manual_seed(3)).images
    reference = FluxPipeline.from_pretrained(str(resolve_model("tiny:flux")))
    reference.set_progress_bar_config(disable=True)
    theirs = reference(**conditioning, true_cfg_scale=3.5, guidance_scale=1.0, num_inference_steps=3, height=96,
                       width=128, output_type="np", generator=torch.Generator().manual_seed(3)).images
    assert ours.shape == (1, 96, 128, 3)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)  # float summation order: ~1e-6
    without_face = pipe.encode_conditioning(["a woman in a forest"], [""],
                                            type(identity)(torch.zeros_like(identity.face_tokens)))
    # the face reaches the conditioning (a fresh fuser lets it in through GroundingDINO's 1e-4 layer scale)
    assert (conditioning["prompt_embeds"] - without_face["prompt_embeds"]).abs().max() > 1e-5
    torch.testing.assert_close(conditioning["negative_prompt_embeds"], without_face["negative_prompt_embeds"])


def test_the_identity_survives_its_token_arrays_and_sizes_are_multiples_of_16(pipe, photos):
    from facegen.core.errors import BadSampling
    from facegen.core.methods.facet5.pipeline import FaceT5Condition

    identity = pipe.encode_identity([photos["astronaut"], photos["tom_hanks"]])
    assert identity.face_tokens.shape == (144, 64)
    with torch.no_grad():  # S* is optional and reads as "a person" (the face enters through the fuser)
        torch.testing.assert_close(pipe.encode_prompt_with_identity(["S* as a chef"], identity),
                                   pipe.encode_prompt_with_identity(["a person as a chef"], identity))
    again = FaceT5Condition.from_arrays(identity.to_arrays())
    torch.testing.assert_close(again.face_tokens, identity.face_tokens)
    with pytest.raises(BadSampling, match="multiple of 16"):
        pipe("a man", identity=identity, width=120)


def official_layout(pipe, directory: Path) -> dict[str, Path]:
    """The published files' format at tiny sizes: the whole wrapper's state dict and the DiT's, torch.save'd."""
    directory.mkdir(parents=True, exist_ok=True)
    files = {"encoder": directory / "face_t5_encoder.pt", "dit": directory / "dit.pt"}
    torch.save({k: v.to(torch.bfloat16) for k, v in pipe.facet5_encoder.state_dict().items()}, files["encoder"])
    torch.save(pipe.transformer.state_dict(), files["dit"])
    return files


def test_convert_round_trips_the_official_layout(pipe, photos, tmp_path):
    """convert → --model DIR: the encoder keeps the checkpoint's bf16 and loads strictly, the DiT is the diffusers
    layout (sharded here, as the 24 GB one is), and the pipeline loaded from it draws what the weights draw."""
    from facegen.cli import main
    from facegen.core.methods import load_pipeline

    files = official_layout(pipe, tmp_path / "hub")
    out = tmp_path / "converted"
    from facegen.core.methods.facet5 import convert as module

    assert main(["convert", "facet5-flux", "--encoder", str(files["encoder"]), "--dit", str(files["dit"]),
                 "--out", str(out), "--preset", "tiny"]) == 0
    assert (out / "config.json").is_file() and (out / "transformer" / "config.json").is_file()
    shard_dir = tmp_path / "sharded"
    module.write_sharded(shard_dir, pipe.transformer.state_dict(), module.TRANSFORMER_WEIGHTS, max_shard_bytes=100_000)
    assert len(list(shard_dir.glob("*.safetensors"))) > 2 and (shard_dir / "diffusion_pytorch_model.safetensors.index.json").is_file()
    from diffusers import FluxTransformer2DModel

    (shard_dir / "config.json").write_text((out / "transformer" / "config.json").read_text())
    resharded = FluxTransformer2DModel.from_pretrained(shard_dir).state_dict()
    for key, value in pipe.transformer.state_dict().items():
        assert torch.equal(resharded[key], value), key
    converted = load_pipeline("facet5", "tiny", model=out)
    assert {p.dtype for p in converted.facet5_encoder.parameters()} == {torch.float32}  # the CPU's; the file: bf16
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert f.get_tensor("encoder_2.fuser.enc_output.weight").dtype == torch.bfloat16
    a = converted("a man", face_image=photos["astronaut"], num_inference_steps=2, output_type="np",
                  generator=torch.Generator().manual_seed(0)).images
    with torch.no_grad():  # the same weights, rounded to bf16 as the checkpoint holds them
        for p in pipe.facet5_encoder.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    b = pipe("a man", face_image=photos["astronaut"], num_inference_steps=2, output_type="np",
             generator=torch.Generator().manual_seed(0)).images
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_bad_checkpoints_give_one_line_and_write_nothing(pipe, tmp_path, capsys):
    from facegen.cli import main

    files = official_layout(pipe, tmp_path / "hub")
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"w": Payload()}, evil)
    wrong = tmp_path / "wrong.pt"
    state = torch.load(files["encoder"], weights_only=True)
    state["encoder_2.face_patch_proj.weight"] = torch.zeros(3, 3)
    torch.save(state, wrong)
    existing = tmp_path / "existing"
    existing.mkdir()
    cases = [(["--encoder", str(evil)], "needs pickle"),
             (["--encoder", str(wrong)], "has shape (3, 3)"),
             (["--encoder", str(files["dit"]), "--dit", str(files["encoder"])], "swapped"),
             (["--encoder", str(files["encoder"]), "--dit", str(files["encoder"])], "swapped"),
             (["--encoder", str(tmp_path / "missing.pt")], "no such file")]
    for flags, message in cases:
        out = tmp_path / "out"
        assert main(["convert", "facet5-flux", *flags, "--out", str(out), "--preset", "tiny"]) == 2, flags
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
        assert "pwned" not in err and not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary left behind
    assert main(["convert", "facet5-flux", "--encoder", str(files["encoder"]), "--out", str(existing),
                 "--preset", "tiny"]) == 2
    assert "already exists" in capsys.readouterr().err and not any(existing.iterdir())


def test_streamed_safetensors_equal_the_library_s(tmp_path):
    from facegen.core.models.checkpoints import write_safetensors
    from safetensors.torch import load_file

    tensors = {"a": torch.randn(3, 5), "b": torch.randn(7).to(torch.bfloat16), "c": torch.tensor(3),
               "d": torch.arange(6, dtype=torch.uint8).reshape(2, 3), "e": torch.randn(4, 4).t()}
    write_safetensors(tmp_path / "x.safetensors", tensors, {"format": "pt"})
    back = load_file(str(tmp_path / "x.safetensors"))
    assert back.keys() == tensors.keys()
    for k, v in tensors.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
