"""The `official` FaceCLIP architecture against ByteDance's own code (fixtures made offline by
tests/fixtures/faceclip_official/make_fixtures.py from bytedance/FaceCLIP @ a984887), the converter, and the published
model through the pipeline."""
import json
import pickle
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from facegen.cli import main
from facegen.core.config import load_preset
from facegen.core.errors import ConfigError, ModelNotFound
from facegen.core.methods import REGISTRY
from facegen.core.methods.faceclip.config import OfficialFaceCLIPConfig
from facegen.core.methods.faceclip.official import OfficialFaceCLIPEncoder, exported_face_reader

FIXTURES = __import__("pathlib").Path(__file__).resolve().parents[1] / "fixtures" / "faceclip_official"


# The session's Ray (other tests started it) forwards its processes' logs to this process's stderr, e.g.
# "(raylet) file_system_monitor.cc: ... is over 95% full" on a crowded disk: not lines this CLI printed.
RAY_FORWARDED = re.compile(r"^(\x1b\[[0-9;]*m)?\((raylet|[^)]*pid=\d+[^)]*)\)")


def own_lines(err):
    return [line for line in err.splitlines() if not RAY_FORWARDED.match(line)]


def fixture_outputs(encoder, z):
    """Our encoder on the fixture's inputs, as the official wrapper was called: faces in [0, 1] resized to 112,
    mask true with the prompts, then the zero faces with mask false and the official negative prompt."""
    meta = json.loads(str(z["meta"]))
    pixels = F.interpolate(torch.from_numpy(z["faces"]), size=(112, 112), mode="bilinear", align_corners=False)
    with torch.no_grad():
        e, t = encoder.read_pixels(pixels)
        embeds, pooled = encoder(meta["prompts"], e, t)
        neg, neg_pooled = encoder.encode_negative([meta["negative"]] * len(meta["prompts"]))
    return {"prompt_embeds": embeds, "pooled": pooled, "negative_prompt_embeds": neg, "negative_pooled": neg_pooled}


def assert_matches_official(outputs, z):
    for name, ours in outputs.items():
        torch.testing.assert_close(ours, torch.from_numpy(z[name]), rtol=0, atol=1e-4, msg=name)


def test_matches_the_official_code_at_reduced_size():
    z = np.load(FIXTURES / "small.npz")
    small = json.loads(str(z["meta"]))["small"]
    config = load_preset("tiny").method("faceclip").encoder.official  # the tiny preset's sizes are the fixture's
    assert (config.tower_l.width, config.tower_g.width, config.vit.embed_dim, config.fuser.layers) == (
        small["l"]["width"], small["g"]["width"], small["vit"]["embed_dim"], small["fuser"]["layers"])
    encoder = OfficialFaceCLIPEncoder(config).eval()
    encoder.load_state_dict({k[len("state/"):]: torch.from_numpy(z[k]) for k in z.files if k.startswith("state/")},
                            strict=True)
    meta = json.loads(str(z["meta"]))
    ids, id_mask = encoder.tokenize(meta["prompts"], torch.ones(2, dtype=torch.bool))
    assert torch.equal(ids, torch.from_numpy(z["input_ids"][:2]))  # open_clip's tokenizer, truncation included
    assert id_mask.sum(1).tolist() == [1, 1] and id_mask[:, 4].all()  # "Photo of a id": the slot is token 4
    outputs = fixture_outputs(encoder, z)
    assert outputs["prompt_embeds"].shape == (2, 77, 96) and outputs["pooled"].shape == (2, 32)
    assert_matches_official(outputs, z)
    # the face matters, and so does the prefix the negative leaves out
    assert (outputs["prompt_embeds"] - outputs["negative_prompt_embeds"]).abs().max() > 0.1


def test_full_size_state_dict_is_the_published_checkpoints():
    expected = json.loads((FIXTURES / "full_keys.json").read_text())
    with torch.device("meta"):
        encoder = OfficialFaceCLIPEncoder(OfficialFaceCLIPConfig())
    ours = {k: list(v.shape) for k, v in encoder.state_dict().items()}
    assert ours == expected
    count = {b: sum(int(np.prod(s)) for k, s in ours.items() if k.startswith(b + ".")) for b in ("face_clip_l", "face_clip_g")}
    assert count == {"face_clip_l": 461_139_012, "face_clip_g": 1_112_213_060}  # = the 3.15 GB file in 16 bits


def test_convert_round_trips(official_checkpoint):
    """The converted export gives the conditioning the official modules gave, and carries the fine-tuned UNet."""
    from diffusers import UNet2DConditionModel
    from facegen.core.methods.faceclip.encoder import load_encoder

    d, z = official_checkpoint["model"], official_checkpoint["fixture"]
    assert json.loads((d / "config.json").read_text())["_class_name"] == "OfficialFaceCLIPEncoder"
    assert_matches_official(fixture_outputs(load_encoder(d), z), z)
    unet = UNet2DConditionModel.from_pretrained(d / "unet")
    for k, v in unet.state_dict().items():
        torch.testing.assert_close(v, official_checkpoint["unet_state"][k], rtol=0, atol=0)


def test_the_face_replica_reads_what_the_pipeline_reads(official_checkpoint, photos):
    """Serving encodes faces with the face ViTs alone (no text towers): the same condition the full pipeline gets."""
    from facegen.core.methods.faceclip.pipeline import FaceCLIPSDXLPipeline

    d = official_checkpoint["model"]
    pipe = FaceCLIPSDXLPipeline.from_preset("tiny", model=d)
    alone = FaceCLIPSDXLPipeline.load_face_encoder("tiny", model=d)
    a, b = pipe.encode_identity(photos["astronaut"]), alone.encode_identity(photos["astronaut"])
    assert a.face_embedding.shape == (2, 24) and a.face_tokens.shape == (2, 144, 16)  # one row per branch
    torch.testing.assert_close(a.face_tokens, b.face_tokens)
    torch.testing.assert_close(a.face_embedding.norm(dim=-1), torch.ones(2))
    assert isinstance(exported_face_reader(d).vits[0], torch.nn.Module)


def test_pipeline_draws_with_the_converted_model(official_checkpoint, photos):
    """--model DIR: the converted encoder and UNet, SDXL's text encoders never loaded; the image is diffusers' own
    SDXL pipeline given the official conditioning (positive and zero-face negative)."""
    from diffusers import StableDiffusionXLPipeline
    from facegen.core.methods.faceclip.pipeline import FaceCLIPSDXLPipeline

    pipe = FaceCLIPSDXLPipeline.from_preset("tiny", model=official_checkpoint["model"])
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.faceclip_encoder, OfficialFaceCLIPEncoder)
    torch.testing.assert_close(pipe.unet.conv_out.bias, official_checkpoint["unet_state"]["conv_out.bias"])
    identity = pipe.encode_identity(photos["astronaut"])
    embeds, pooled = pipe.encode_prompt_with_identity("a chef in a kitchen", identity)
    neg, neg_pooled = pipe.encode_negative("")
    kw = dict(num_inference_steps=2, guidance_scale=5.0, width=64, height=48, output_type="np")
    stock = StableDiffusionXLPipeline(vae=pipe.vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                      tokenizer_2=None, unet=pipe.unet, scheduler=pipe.scheduler, add_watermarker=False)
    stock.set_progress_bar_config(disable=True)
    theirs = stock(prompt_embeds=embeds, pooled_prompt_embeds=pooled, negative_prompt_embeds=neg,
                   negative_pooled_prompt_embeds=neg_pooled, generator=torch.Generator().manual_seed(1), **kw).images
    mine = pipe(prompt="a chef in a kitchen", identity=identity, generator=torch.Generator().manual_seed(1), **kw).images
    np.testing.assert_allclose(mine, theirs, atol=1e-5)
    other = pipe.encode_identity(photos["tom_hanks"])
    assert (pipe.encode_prompt_with_identity("a chef in a kitchen", other)[0] - embeds).abs().max() > 1e-3


def test_official_needs_a_checkpoint():
    from facegen.core.methods.faceclip.pipeline import FaceCLIPSDXLPipeline

    with pytest.raises(ConfigError, match="convert"):
        FaceCLIPSDXLPipeline.from_preset("tiny", ["methods.faceclip.encoder.architecture=official"])


class NeedsPickle:
    pass


def test_convert_refuses_bad_checkpoints(official_checkpoint, tmp_path, capsys):
    d = official_checkpoint["dir"]
    evil = tmp_path / "evil.pt"
    torch.save({"x": NeedsPickle()}, evil)
    with pytest.raises(ModelNotFound, match="needs pickle"):
        from facegen.core.models.checkpoints import read_checkpoint

        read_checkpoint(evil, "the encoder")
    state = torch.load(official_checkpoint["encoder_pt"], weights_only=True)
    state["model.face_clip_l.proj1.weight"] = state["model.face_clip_l.proj1.weight"][:, :3]
    torch.save(state, tmp_path / "wrong.pt")
    good = str(d / "face_clip_encoder.pt")
    cases = [
        (["--encoder", str(evil)], "needs pickle"),
        (["--encoder", str(tmp_path / "wrong.pt")], "face_clip_l.proj1.weight has shape"),
        (["--encoder", str(d / "unet.pt")], "missing"),  # the UNet given as the encoder
        (["--encoder", good, "--unet", good], "does not fit the UNet"),  # and the encoder as the UNet
        (["--encoder", str(tmp_path / "absent.pt")], "no such file"),
        (["--encoder", good, "--preset", "faceclip-official"], "does not fit the official architecture"),  # sizes
    ]
    for args, message in cases:
        out = tmp_path / "out"
        preset = [] if "--preset" in args else ["--preset", "tiny"]
        assert main(["convert", "faceclip-official", *args, "--out", str(out), *preset]) == 2
        err = own_lines(capsys.readouterr().err)
        assert len(err) == 1 and message in err[0] and not out.exists(), (args, err)
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-")]  # no half-written output
    taken = official_checkpoint["model"]
    assert main(["convert", "faceclip-official", "--encoder", str(d / "face_clip_encoder.pt"), "--out", str(taken),
                 "--preset", "tiny"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert pickle  # the refused file above was a pickle of a local class


def test_fine_tunes_with_the_diffusion_loss_only(official_checkpoint):
    """train_faceclip from the converted model: the fusers and projections learn, the towers and ViTs stay frozen;
    the alignment stage (its heads are not published) is a clear ConfigError."""
    from facegen.core.methods.faceclip.training import FaceCLIPTask

    model = f"methods.faceclip.model={official_checkpoint['model']}"
    with pytest.raises(ConfigError, match="align_weight=0"):
        FaceCLIPTask.check_config(load_preset("tiny", [model]).method("faceclip"), rows=4)
    preset = load_preset("tiny", [model, "methods.faceclip.train.stage=diffusion", "methods.faceclip.train.align_weight=0",
                                  "train.resolution=64"])
    task = REGISTRY["faceclip"].load_task(preset)
    torch.testing.assert_close(task.unet.conv_out.bias, official_checkpoint["unet_state"]["conv_out.bias"])
    g = torch.Generator().manual_seed(0)
    batch = {"prompt": ["a chef", "a knight"], "face": torch.rand(2, 3, 112, 112, generator=g) * 2 - 1,
             "face_embedding": torch.randn(2, 512, generator=g), "target": torch.rand(2, 3, 64, 64, generator=g) * 2 - 1,
             "row_id": torch.tensor([0, 1])}
    loss, metrics = task(batch)
    loss.backward()
    enc = task.trainable.encoder
    assert torch.isfinite(loss) and "mse" in metrics and "align" not in metrics
    assert enc.face_clip_g.fuser.encoder.text_layers[0].linear1.weight.grad is not None
    assert enc.face_clip_l.transformer.resblocks[0].mlp.c_fc.weight.grad is None
    assert enc.face_clip_l.face_encoder.pos_embed.grad is None


@pytest.mark.parametrize("bad", ["stride0", "complex", "truncated"])
def test_a_hostile_checkpoint_is_refused_in_one_line_and_nothing_is_written(bad, official_checkpoint, tmp_path, capsys):
    """A stride-0 tensor (a few bytes that would expand to its whole shape on export), a complex one, a file cut
    short: `convert` answers one line, exit 2, and leaves no output directory."""
    from facegen.core.pins import sha256_of

    state = torch.load(official_checkpoint["encoder_pt"], weights_only=True)
    key = next(k for k, v in state.items() if v.dim() == 2)
    path = tmp_path / "face_clip_encoder.pt"
    if bad == "stride0":
        state[key] = torch.zeros(1, dtype=state[key].dtype).expand(state[key].shape)
        torch.save(state, path)
    elif bad == "complex":
        state[key] = torch.zeros(state[key].shape, dtype=torch.complex64)
        torch.save(state, path)
    else:
        data = official_checkpoint["encoder_pt"].read_bytes()
        path.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert main(["convert", "faceclip-official", "--encoder", str(path), "--out", str(out), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temporary leftovers either
    # a good conversion records what it read, hashed as it read it
    sources = json.loads((official_checkpoint["model"] / "sources.json").read_text())["sha256"]
    assert sources == {"face_clip_encoder.pt": sha256_of(official_checkpoint["encoder_pt"]),
                       "unet.pt": sha256_of(official_checkpoint["unet_pt"])}
