"""DreamIdentity on SDXL (`dreamidentity-sdxl`): the same M² writing S* into both text towers, equal to diffusers'
own SDXL pipeline when S* holds real words' embeddings; saved and loaded as that entry; trained with SDXL's loss."""
import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from facegen.core.errors import ConfigError
from facegen.core.methods import REGISTRY, load_pipeline
from facegen.core.methods.dreamidentity.pipeline import DreamIdentityPipeline, IdTokens


@pytest.fixture(scope="module")
def xl_pipe():
    pipe = load_pipeline("dreamidentity-sdxl", "tiny")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def word_embeddings(pipe, words: str) -> IdTokens:
    """S* as these words: each tower's own token rows, side by side (CLIP-L's width, then bigG's)."""
    rows = []
    for tokenizer, encoder in ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)):
        ids = tokenizer(words, add_special_tokens=False).input_ids
        assert len(ids) == 2, "the equivalence test needs two single-token words for k = 2"
        rows.append(encoder.get_input_embeddings().weight[ids].detach().clone())
    return IdTokens(torch.cat(rows, dim=-1))


def test_the_entry_is_dreamidentity_on_the_sdxl_family(xl_pipe):
    assert type(xl_pipe) is DreamIdentityPipeline and xl_pipe.method is REGISTRY["dreamidentity-sdxl"]
    assert xl_pipe.base.config.name == "sdxl" and xl_pipe.text_encoder_2 is not None
    widths = (xl_pipe.text_encoder.get_input_embeddings().embedding_dim,
              xl_pipe.text_encoder_2.get_input_embeddings().embedding_dim)
    assert xl_pipe.m2_encoder.m2_config.token_dim == sum(widths)  # one projection head per tower, side by side


def test_equals_diffusers_sdxl_given_real_word_embeddings(xl_pipe):
    """S* set to the embeddings of "tom hanks" in both towers: the image equals StableDiffusionXLPipeline on that
    prompt (its penultimate states, bigG's pooled embedding, zeros for the negative not given)."""
    kw = dict(num_inference_steps=3, output_type="np", width=64, height=48)
    ours = xl_pipe(prompt="S* as a chef", identity=word_embeddings(xl_pipe, "tom hanks"),
                   generator=torch.Generator().manual_seed(3), **kw).images
    stock = StableDiffusionXLPipeline(vae=xl_pipe.vae, text_encoder=xl_pipe.text_encoder,
                                      text_encoder_2=xl_pipe.text_encoder_2, tokenizer=xl_pipe.tokenizer,
                                      tokenizer_2=xl_pipe.tokenizer_2, unet=xl_pipe.unet, scheduler=xl_pipe.scheduler,
                                      add_watermarker=False)
    stock.set_progress_bar_config(disable=True)
    theirs = stock(prompt="tom hanks as a chef", guidance_scale=xl_pipe.config.guidance_scale,
                   generator=torch.Generator().manual_seed(3), **kw).images
    assert ours.shape == theirs.shape == (1, 48, 64, 3)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    # a negative prompt is encoded as SDXL encodes it
    ours = xl_pipe(prompt="S* as a chef", identity=word_embeddings(xl_pipe, "tom hanks"), negative_prompt="blurry",
                   generator=torch.Generator().manual_seed(3), **kw).images
    theirs_neg = stock(prompt="tom hanks as a chef", negative_prompt="blurry", guidance_scale=xl_pipe.config.guidance_scale,
                       generator=torch.Generator().manual_seed(3), **kw).images
    np.testing.assert_allclose(ours, theirs_neg, atol=1e-5)
    other = xl_pipe(prompt="S* as a chef", identity=word_embeddings(xl_pipe, "red hat"),
                    generator=torch.Generator().manual_seed(3), **kw).images
    assert np.abs(other - theirs_neg).max() > 1e-3  # the identity really steers the image


def test_save_and_load_keep_the_entry_and_the_picture(xl_pipe, photos, tmp_path):
    identity = xl_pipe.encode_identity(photos["astronaut"])
    kw = dict(prompt="S* in the snow", identity=identity, num_inference_steps=2, output_type="np", width=64, height=48)
    before = xl_pipe(**kw, generator=torch.Generator().manual_seed(0)).images
    xl_pipe.save_pretrained(tmp_path / "pipe")
    loaded = DreamIdentityPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.method.name == "dreamidentity-sdxl"
    np.testing.assert_allclose(loaded(**kw, generator=torch.Generator().manual_seed(0)).images, before, atol=1e-6)


def test_an_sd21_encoder_is_refused_on_sdxl(tiny_pipe, tmp_path):
    tiny_pipe.m2_encoder.save_pretrained(tmp_path / "m2")
    with pytest.raises(ConfigError, match="token_dim is 32 but the base model's text towers take 96-d tokens"):
        load_pipeline("dreamidentity-sdxl", "tiny", model=str(tmp_path / "m2"))


def test_training_reaches_both_towers_heads(photos):
    """SDXL's diffusion loss (its size condition, bigG's pooled embedding) with S* in both towers: finite, and the
    gradient reaches the rows of M²'s last layer that write CLIP-L's share and those that write bigG's."""
    from facegen.core.config import load_preset

    task = REGISTRY["dreamidentity-sdxl"].load_task(load_preset("tiny"))
    b = 2
    batch = {"face": torch.rand(b, 3, 112, 112) * 2 - 1, "prompt": ["a photo of S*", "S* as a chef"],
             "target": torch.rand(b, 3, 64, 64) * 2 - 1}
    loss, metrics = task(batch)
    loss.backward()
    assert torch.isfinite(loss) and metrics["mse"] > 0
    d1 = task.prompt_encoder.text_encoder.get_input_embeddings().embedding_dim
    grad = task.trainable.projectors[0][2].weight.grad
    assert grad[:d1].abs().sum() > 0 and grad[d1:].abs().sum() > 0
