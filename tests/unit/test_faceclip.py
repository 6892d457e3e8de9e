import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from facegen.core.bases import SDXL
from facegen.core.config import load_preset
from facegen.core.methods import REGISTRY
from facegen.core.methods.faceclip.encoder import FaceCLIPEncoder
from facegen.core.methods.faceclip.pipeline import FaceCLIPCondition, FaceCLIPSDXLPipeline
from facegen.core.models.tokens import token_embedding_override, tokenize_with_placeholders


@pytest.fixture(scope="module")
def fc_pipe():
    pipe = FaceCLIPSDXLPipeline.from_preset("tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sdxl_reference(fc_pipe, prompt: str, identity):
    """diffusers' own SDXL encode_prompt on the prefixed prompt, with the "id" token embedding replaced."""
    comps = SDXL.load("tiny:sdxl")
    sdxl = StableDiffusionXLPipeline(**comps, add_watermarker=False)
    sdxl.set_progress_bar_config(disable=True)
    enc = fc_pipe.faceclip_encoder
    prefixed = enc.prefixed(prompt)
    assert prefixed.startswith("photo of a S* person.")
    hooks = []
    for te, tok, branch in ((comps["text_encoder"], comps["tokenizer"], enc.branch_1),
                            (comps["text_encoder_2"], comps["tokenizer_2"], enc.branch_2)):
        ids, slots = tokenize_with_placeholders(tok, prefixed, 1)
        mask = torch.zeros(1, len(ids), dtype=torch.bool)
        mask[0, slots] = True
        hooks.append(token_embedding_override(te, mask, branch.id_proj(identity.face_embedding[None]).detach()))
    text = prefixed.replace("S*", "id")
    with hooks[0], hooks[1]:
        embeds, _, pooled, _ = sdxl.encode_prompt(text, do_classifier_free_guidance=False)
    return sdxl, embeds, pooled


def test_at_init_the_conditioning_is_sdxls_own(fc_pipe, photos):
    identity = fc_pipe.encode_identity(photos["astronaut"])
    ours, ours_pooled = fc_pipe.encode_prompt_with_identity("a chef in a kitchen", identity)
    sdxl, embeds, pooled = sdxl_reference(fc_pipe, "a chef in a kitchen", identity)
    assert ours.shape == (1, 77, 32 + 64) and ours_pooled.shape == (1, 32)
    torch.testing.assert_close(ours, embeds, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_pooled, pooled, rtol=0, atol=1e-5)
    # and the image equals SDXL's own pipeline given those embeddings
    neg, neg_pooled = fc_pipe.encode_negative("")
    kw = dict(num_inference_steps=4, guidance_scale=5.0, width=64, height=48, output_type="np")
    theirs = sdxl(prompt_embeds=embeds, pooled_prompt_embeds=pooled, negative_prompt_embeds=neg,
                  negative_pooled_prompt_embeds=neg_pooled, generator=torch.Generator().manual_seed(2), **kw).images
    mine = fc_pipe(prompt="a chef in a kitchen", identity=identity, generator=torch.Generator().manual_seed(2), **kw).images
    np.testing.assert_allclose(mine, theirs, atol=1e-5)


def test_conditioning_depends_on_the_face(fc_pipe, photos):
    a = fc_pipe.encode_identity(photos["astronaut"])
    b = fc_pipe.encode_identity(photos["tom_hanks"])
    ea, pa = fc_pipe.encode_prompt_with_identity("a chef", a)
    eb, pb = fc_pipe.encode_prompt_with_identity("a chef", b)
    assert (ea - eb).abs().max() > 1e-3 and (pa - pb).abs().max() > 1e-3
    both = fc_pipe.encode_identity([photos["astronaut"], photos["tom_hanks"]])
    assert abs(float(both.face_embedding.norm()) - 1) < 1e-5
    torch.testing.assert_close(both.face_tokens, (a.face_tokens + b.face_tokens) / 2)
    # The encoder-only load (the service's face-encoder replica: face ViT alone, no text towers) agrees.
    alone = FaceCLIPSDXLPipeline.load_face_encoder("tiny")
    assert not hasattr(alone, "faceclip_encoder")
    same = alone.encode_identity([photos["astronaut"], photos["tom_hanks"]])
    torch.testing.assert_close(same.face_tokens, both.face_tokens)
    torch.testing.assert_close(same.face_embedding, both.face_embedding)
    back = FaceCLIPCondition.from_arrays(both.to_arrays())
    assert back.face_tokens.equal(both.face_tokens) and back.face_embedding.equal(both.face_embedding)


@pytest.mark.parametrize("size", [(64, 64), (72, 40), (40, 112)])
def test_any_multiple_of_eight(fc_pipe, photos, size):
    out = fc_pipe(prompt="a chef", face_image=photos["astronaut"], width=size[0], height=size[1],
                  num_inference_steps=2, generator=torch.Generator().manual_seed(0))
    assert out.images[0].size == size


def _batch(fc_pipe, photos):
    ids = [fc_pipe.encode_identity(photos[k]) for k in ("astronaut", "tom_hanks", "group")]
    prompts = ["a chef", "an astronaut on the moon", "a painting of a king"]
    identity = torch.stack([i.face_embedding for i in ids])
    tokens = torch.stack([i.face_tokens for i in ids])
    return prompts, identity, tokens


def test_alignment_loss_goes_down_and_gradients_reach_the_trainable_parts(photos):
    p = load_preset("tiny")
    section = p.method("faceclip")
    c = SDXL.load(section.base_model)
    torch.manual_seed(0)
    enc = FaceCLIPEncoder.from_sdxl(section.encoder, c["text_encoder"], c["text_encoder_2"], c["tokenizer"],
                                    c["tokenizer_2"]).train()
    pipe = FaceCLIPSDXLPipeline(unet=c["unet"], vae=c["vae"], scheduler=c["scheduler"], faceclip_encoder=enc,
                                face_analyzer=FaceCLIPSDXLPipeline.from_preset("tiny").face_analyzer)
    prompts, identity, tokens = _batch(pipe, photos)
    text_targets = enc.plain_text_embeds(prompts)
    image_targets = torch.nn.functional.normalize(torch.randn(3, section.encoder.clip_embed_dim), dim=-1)
    opt = torch.optim.Adam([q for q in enc.parameters() if q.requires_grad], lr=1e-2)
    losses = []
    for step in range(12):
        _, pooled = enc(prompts, identity, tokens)
        loss, parts = enc.alignment_loss(pooled, identity, text_targets, image_targets)
        opt.zero_grad()
        loss.backward()
        if step == 3:  # gates start at zero and open one link per update; by now every trainable part sees a gradient
            for name in ("branch_2.id_proj.weight", "branch_2.fusion.0.gates", "branch_2.face_proj.weight",
                         "branch_2.fusion.0.text_from_face.in_proj_weight", "pool_gate", "face_head.weight",
                         "log_scales", "biases"):
                grad = dict(enc.named_parameters())[name].grad
                assert grad is not None and grad.abs().sum() > 0, name
            assert all(q.grad is None for q in enc.branch_1.text_encoder.parameters())  # frozen tower
            assert all(q.grad is None for q in enc.vit.parameters())
        opt.step()
        losses.append(loss.item())
    assert set(parts) == {"face", "text", "image"}
    assert losses[-1] < 0.5 * losses[0]
    # The CLIP-L branch feeds only prompt_embeds (the diffusion loss): its projection and fusion learn from that.
    enc.zero_grad()
    embeds, _ = enc(prompts, identity, tokens)
    embeds.pow(2).mean().backward()
    for name in ("branch_1.id_proj.weight", "branch_1.fusion.0.gates", "branch_1.fusion.1.gates"):  # gates open first
        grad = dict(enc.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_text_towers_train_when_configured():
    section = load_preset("tiny").method("faceclip")
    c = SDXL.load(section.base_model)
    enc = FaceCLIPEncoder.from_sdxl(section.encoder, c["text_encoder"], c["text_encoder_2"], c["tokenizer"],
                                    c["tokenizer_2"]).set_trainable(train_text=True).train()
    tokens = enc.encode_faces(torch.zeros(1, 3, 112, 112))
    _, pooled = enc(["a chef"], torch.randn(1, 512), tokens)
    pooled.sum().backward()
    assert enc.branch_2.text_encoder.text_model.final_layer_norm.weight.grad is not None


def test_round_trip(fc_pipe, photos, tmp_path):
    identity = fc_pipe.encode_identity(photos["astronaut"])
    with torch.no_grad():
        for q in fc_pipe.faceclip_encoder.parameters():  # make the new layers matter before saving
            q.add_(0.01 * torch.randn_like(q)) if q.dim() == 0 or q.shape[0] == 3 else None
    before = fc_pipe.encode_prompt_with_identity("a chef", identity)
    fc_pipe.faceclip_encoder.save_pretrained(tmp_path / "enc")
    loaded = FaceCLIPEncoder.from_pretrained(tmp_path / "enc")
    after = loaded(["a chef"], identity.face_embedding[None], identity.face_tokens[None])
    for x, y in zip(before, after):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_trained_unet_is_exported_and_loaded_by_the_pipeline(mode, tmp_path):
    """train.stage=diffusion with a trained UNet: the export holds it, and the pipeline draws with it (not the base)."""
    from facegen.core.methods import load_pipeline
    from facegen.core.methods.training_utils import trained_weights

    preset = load_preset("tiny", ["methods.faceclip.train.stage=diffusion", f"methods.faceclip.train.unet={mode}"])
    task = REGISTRY["faceclip"].load_task(preset, load_base=False)
    torch.manual_seed(1)
    with torch.no_grad():  # stand-in for training: move every trainable UNet weight
        for p in task.trainable.unet.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    task.export(trained_weights(task.trainable), tmp_path)  # what a checkpoint holds
    pipe = load_pipeline("faceclip", preset, tmp_path)
    base = load_pipeline("faceclip", preset)
    c = pipe.unet.config
    sample = torch.randn(1, c.in_channels, 8, 8)
    pooled_dim = c.projection_class_embeddings_input_dim - 6 * c.addition_time_embed_dim
    kwargs = {"encoder_hidden_states": torch.randn(1, 4, c.cross_attention_dim),
              "added_cond_kwargs": {"text_embeds": torch.randn(1, pooled_dim), "time_ids": torch.tensor([[64.0] * 6])}}
    with torch.no_grad():
        trained = task.trainable.unet(sample, 10, **kwargs).sample
        loaded = pipe.unet(sample, 10, **kwargs).sample
        untouched = base.unet(sample, 10, **kwargs).sample
    assert torch.allclose(trained, loaded, atol=1e-5)
    assert not torch.allclose(loaded, untouched, atol=1e-3)


def test_a_base_model_stored_in_fp16_trains_in_fp32(tmp_path):
    """Checkpoints are often fp16 on disk (hub fp16 variants; the random real-shape models): the trained parts must
    come up in fp32 anyway — at real shapes, fp32 fusion layers met fp16 text towers and training stopped."""
    from diffusers import StableDiffusionXLPipeline
    from facegen.core.weights import resolve_model

    fp16 = tmp_path / "sdxl-fp16"
    StableDiffusionXLPipeline.from_pretrained(resolve_model("tiny:sdxl"), add_watermarker=False).to(
        torch.float16).save_pretrained(fp16)
    preset = load_preset("tiny", [f"methods.faceclip.base_model={fp16}", "methods.faceclip.train.stage=diffusion",
                                  "methods.faceclip.train.unet=lora"])
    task = REGISTRY["faceclip"].load_task(preset, load_base=False)
    assert {p.dtype for p in task.trainable.parameters()} == {torch.float32}
    encoder = task.trainable.encoder
    embeds, pooled = encoder(["a chef"], torch.randn(1, 512), encoder.encode_faces(torch.zeros(1, 3, 112, 112)))
    assert embeds.dtype == pooled.dtype == torch.float32


def test_lora_training_keeps_the_frozen_unet_in_the_frozen_dtype():
    """LoRA on SDXL: the base UNet weights run in the frozen dtype (bf16 on a GPU halves its 10 GB), the adapters
    train in fp32, and the loss reaches them through the mixed-precision forward."""
    from facegen.core.methods.training_utils import trained_weights

    preset = load_preset("tiny", ["methods.faceclip.train.stage=diffusion", "methods.faceclip.train.unet=lora",
                                  "methods.faceclip.train.cond_dropout=0"])
    task = REGISTRY["faceclip"].load_task(preset, frozen_dtype=torch.bfloat16)
    unet = task.trainable.unet
    assert {p.dtype for p in unet.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in unet.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert all("lora" in k for k in trained_weights(unet))
    torch.manual_seed(0)
    batch = {"prompt": np.array(["a photo of S*", "S* as a chef"]), "face": torch.rand(2, 3, 112, 112) * 2 - 1,
             "face_embedding": torch.nn.functional.normalize(torch.randn(2, 512), dim=-1),
             "target": torch.rand(2, 3, 64, 64) * 2 - 1}
    loss, parts = task(batch)
    loss.backward()
    grads = [p.grad for n, p in unet.named_parameters() if "lora_B" in n]
    assert torch.isfinite(loss) and grads and all(g is not None and g.dtype == torch.float32 for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_an_export_that_does_not_fit_is_refused(fc_pipe, tmp_path):
    """Weights are read one tensor at a time (no second copy of a 4 GB encoder), still strictly: a missing key or a
    wrong shape is a clear ModelNotFound."""
    from facegen.core.errors import ModelNotFound
    from safetensors.torch import load_file, save_file

    fc_pipe.faceclip_encoder.save_pretrained(tmp_path / "enc")
    weights = tmp_path / "enc" / "model.safetensors"
    state = load_file(str(weights))
    assert FaceCLIPEncoder.from_pretrained(tmp_path / "enc").state_dict().keys() == state.keys()
    save_file({k: v for k, v in state.items() if k != "pool_gate"}, str(weights))
    with pytest.raises(ModelNotFound, match="missing.*pool_gate"):
        FaceCLIPEncoder.from_pretrained(tmp_path / "enc")
    save_file({**state, "pool_gate": torch.zeros(3)}, str(weights))
    with pytest.raises(ModelNotFound, match="pool_gate has shape"):
        FaceCLIPEncoder.from_pretrained(tmp_path / "enc")
