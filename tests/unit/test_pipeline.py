import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from facegen.core.errors import BadPrompt, BadSampling
from facegen.core.methods.dreamidentity.pipeline import DreamIdentityPipeline, IdTokens
from facegen.core.models.tokens import tokenize_with_placeholders


def word_embeddings(pipe, words: str) -> IdTokens:
    ids = pipe.tokenizer(words, add_special_tokens=False).input_ids
    assert len(ids) == 2, "the equivalence test needs two single-token words for k = 2"
    return IdTokens(pipe.text_encoder.get_input_embeddings().weight[ids].detach().clone())


def reference_sd(pipe) -> StableDiffusionPipeline:
    sd = StableDiffusionPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
                                 scheduler=pipe.scheduler, safety_checker=None, feature_extractor=None,
                                 requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    return sd


def test_placeholder_tokenisation_equals_the_words(tiny_pipe):
    tok = tiny_pipe.tokenizer
    for prompt in ["S* as a chef", "oil painting style, S* face", "a photo of S*, and S*'s dog"]:
        ids, slots = tokenize_with_placeholders(tok, prompt, 2)
        words = tok(prompt.replace("S*", "tom hanks"), padding="max_length", max_length=77).input_ids
        filled = list(ids)
        for s, w in zip(slots, [i for j, i in enumerate(words) if j in slots]):
            filled[s] = w
        assert filled == words and len(slots) == 2 * prompt.count("S*")


def test_equals_stable_diffusion_given_real_word_embeddings(tiny_pipe):
    """With S* set to the embeddings of "tom hanks", the image equals diffusers' own pipeline on that prompt."""
    identity = word_embeddings(tiny_pipe, "tom hanks")
    ours = tiny_pipe(prompt="S* as a chef", identity=identity, num_inference_steps=5, output_type="np",
                     generator=torch.Generator().manual_seed(3)).images
    theirs = reference_sd(tiny_pipe)(prompt="tom hanks as a chef", num_inference_steps=5, guidance_scale=7.5,
                                     height=128, width=128, output_type="np",
                                     generator=torch.Generator().manual_seed(3)).images
    assert ours.shape == theirs.shape == (1, 128, 128, 3)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    other = tiny_pipe(prompt="S* as a chef", identity=word_embeddings(tiny_pipe, "red hat"), num_inference_steps=5,
                      output_type="np", generator=torch.Generator().manual_seed(3)).images
    assert np.abs(other - theirs).max() > 1e-3  # the identity really steers the image


def test_batched_prompts_and_negative_prompt(tiny_pipe):
    identity = word_embeddings(tiny_pipe, "tom hanks")
    prompts = ["S* as a chef", "S* on the moon"]
    ours = tiny_pipe(prompt=prompts, identity=identity, negative_prompt="blurry", num_inference_steps=4,
                     num_images_per_prompt=2, width=64, height=96, output_type="np",
                     generator=torch.Generator().manual_seed(0)).images
    theirs = reference_sd(tiny_pipe)(prompt=["tom hanks as a chef", "tom hanks on the moon"], negative_prompt=["blurry"] * 2,
                                     num_inference_steps=4, num_images_per_prompt=2, width=64, height=96,
                                     guidance_scale=7.5, output_type="np",
                                     generator=torch.Generator().manual_seed(0)).images
    assert ours.shape == (4, 96, 64, 3)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_defaults_come_from_the_preset():
    """Values that differ from every default (the dataclass's and the pipeline's), so an ignored preset fails."""
    pipe = DreamIdentityPipeline.from_preset("tiny", [
        "methods.dreamidentity.sampling.steps=7", "methods.dreamidentity.sampling.guidance_scale=3.25",
        "methods.dreamidentity.sampling.width=72", "methods.dreamidentity.sampling.height=88",
        "methods.dreamidentity.sampling.scheduler=euler", "methods.dreamidentity.sampling.negative_prompt=grainy"])
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    c = pipe.config
    assert (c.num_inference_steps, c.guidance_scale, c.width, c.height, c.negative_prompt) == (7, 3.25, 72, 88, "grainy")
    pipe.set_progress_bar_config(disable=True)
    assert pipe("S* as a chef", identity=word_embeddings(pipe, "tom hanks"), output_type="np").images.shape == (1, 88, 72, 3)


def test_prompt_without_placeholder_is_refused(tiny_pipe, photos):
    with pytest.raises(BadPrompt, match='no "S\\*"'):
        tiny_pipe(prompt="a chef", face_image=photos["astronaut"], num_inference_steps=2)
    with pytest.raises(BadSampling, match="multiple of 8"):
        tiny_pipe(prompt="S* a chef", identity=word_embeddings(tiny_pipe, "tom hanks"), width=100, num_inference_steps=2)


def test_face_photo_to_image_and_several_photos(tiny_pipe, photos):
    one = tiny_pipe.encode_identity(photos["astronaut"])
    assert one.tokens.shape == (2, 32)
    both = tiny_pipe.encode_identity([photos["astronaut"], photos["tom_hanks"]])
    hanks = tiny_pipe.encode_identity(photos["tom_hanks"])
    torch.testing.assert_close(both.tokens, (one.tokens + hanks.tokens) / 2)
    # The encoder-only load (what the service's face-encoder replica runs) gives the same id_tokens.
    alone = DreamIdentityPipeline.load_face_encoder("tiny").encode_identity([photos["astronaut"], photos["tom_hanks"]])
    torch.testing.assert_close(alone.tokens, both.tokens)
    assert IdTokens.from_arrays(both.to_arrays()).tokens.equal(both.tokens)
    out = tiny_pipe(prompt="S* as a chef", face_image=photos["astronaut"], num_inference_steps=3,
                    generator=torch.Generator().manual_seed(0))
    assert out.images[0].size == (128, 128)


def test_save_and_load_round_trip(tiny_pipe, photos, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "pipe")
    loaded = DreamIdentityPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert (tmp_path / "pipe" / "m2_encoder" / "model.safetensors").is_file()
    a = tiny_pipe.encode_identity(photos["astronaut"])
    torch.testing.assert_close(loaded.encode_identity(photos["astronaut"]).tokens, a.tokens, rtol=0, atol=0)
    kw = dict(prompt="S* as a chef", identity=a, num_inference_steps=3, output_type="np")
    np.testing.assert_allclose(loaded(**kw, generator=torch.Generator().manual_seed(1)).images,
                               tiny_pipe(**kw, generator=torch.Generator().manual_seed(1)).images, atol=1e-6)


def test_an_export_keeps_the_full_denoiser_it_started_from(tmp_path):
    """ExportedDenoiser.save: a run that trained no denoiser (the alignment stage, whatever train.unet says) still
    carries the full UNet of the export it started from, and writes no adapters."""
    from facegen.core.methods.faceclip.pipeline import UNET

    start, out = tmp_path / "start", tmp_path / "out"
    (start / UNET.full_dir).mkdir(parents=True)
    (start / UNET.full_dir / "config.json").write_text('{"_class_name": "UNet2DConditionModel"}')
    out.mkdir()
    UNET.save(out, start, None, full=True)
    assert UNET.has_full(out) and not (out / UNET.lora_dir).exists()
    UNET.save(tmp_path / "fresh", None, None)
    assert not UNET.has_full(tmp_path / "fresh")
