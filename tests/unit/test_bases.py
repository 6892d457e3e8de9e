"""The base-model layer (facegen.core.bases) and the contract as code: every registry entry draws with its family's
diffusers pipeline, a head box at scale 0 changes nothing, a request is resolved once, a pipeline that forgets a
hook is refused."""
import json

import numpy as np
import pytest
import torch
from facegen.core.bases import FAMILIES, get_base
from facegen.core.errors import ConfigError
from facegen.core.methods import NAMES, REGISTRY, load_pipeline
from facegen.core.weights import resolve_model

TINY = {"sd21": "tiny:sd21", "sdxl": "tiny:sdxl", "flux": "tiny:flux"}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_family_loads_its_layout_and_says_what_it_is(name):
    """Its parts load from the real diffusers layout (tiny), its denoiser is diffusers' pipeline of its config, and
    the VAE scale it reads from a model's config is the layout's."""
    import diffusers

    base = get_base(name)
    parts = base.load(TINY[name])
    assert set(parts) == set(base.config.components) and all(parts[k] is not None for k in parts)
    assert type(base.denoiser(parts)) is getattr(diffusers, base.config.pipeline)
    vae = json.loads((resolve_model(TINY[name]) / "vae" / "config.json").read_text())
    assert base.vae_scale_factor_of(TINY[name]) == 2 ** (len(vae["block_out_channels"]) - 1)
    assert base.config.native_canvas[0] % base.config.size_multiple == 0
    if base.config.text_towers:  # the widths a method writing into the towers must match, read without weights
        assert base.token_dims(TINY[name]) == base.token_dims_of(parts)
    skipped = base.load(TINY[name], skip=(base.config.denoiser,))
    assert skipped[base.config.denoiser] is None


def test_every_registry_entry_names_a_family_and_unknown_ones_are_refused():
    assert {m.base for m in REGISTRY.values()} <= set(FAMILIES)
    assert REGISTRY["facet5"].size_multiple == 16 and REGISTRY["faceclip"].size_multiple == 8
    with pytest.raises(ConfigError, match="unknown base model family"):
        get_base("sd15")


def test_a_pipeline_missing_a_hook_is_refused():
    from facegen.core.methods.identity_pipeline import IdentityPipeline

    with pytest.raises(TypeError, match="encode_conditioning"):
        class Incomplete(IdentityPipeline):  # noqa: F841
            default_method = "faceclip"

            @classmethod
            def from_section(cls, method, section, face_config, **kwargs):
                raise AssertionError

            @classmethod
            def face_reader(cls, method, section, weights):
                raise AssertionError


def prompt_of(method) -> str:
    return "S* as a chef" if method.needs_placeholder else "a chef in a kitchen"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_picture_with_a_head_box_at_scale_0(name, photos):
    """A head box at control scale 0 draws exactly the picture without one, for every entry: the ControlNet path
    draws the same noise from the seed (FLUX: diffusers' ControlNet pipeline would sample the control latents first)."""
    pipe = load_pipeline(name, "tiny")
    pipe.set_progress_bar_config(disable=True)
    identity = pipe.encode_identity(photos["astronaut"])
    kw = dict(prompt=prompt_of(pipe.method), identity=identity, width=64, height=48, num_inference_steps=2,
              output_type="np")
    plain = pipe(**kw, generator=torch.Generator().manual_seed(4)).images
    boxed = pipe(**kw, head_box=(16, 8, 32, 32), control_scale=0.0, generator=torch.Generator().manual_seed(4)).images
    np.testing.assert_allclose(boxed, plain, atol=1e-6)
    on = pipe(**kw, head_box=(16, 8, 32, 32), control_scale=1.0, generator=torch.Generator().manual_seed(4)).images
    assert np.abs(on - plain).max() > 1e-4  # the ControlNet really runs


class Counter:
    def __init__(self, monkeypatch, module, name):
        self.calls, original = 0, getattr(module, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)


def test_the_cli_resolves_a_head_box_once(monkeypatch, photos, tmp_path):
    """`generate --head-box`: the scene-switch rules checked once and the keypoint map drawn once, then drawn as
    that plan (the pipeline resolves nothing again)."""
    import facegen.core.control as control
    from facegen.cli import main

    rules, drawn = Counter(monkeypatch, control, "resolve"), Counter(monkeypatch, control, "head_control_image")
    out = tmp_path / "boxed.png"
    assert main(["generate", "--method", "faceclip", "--face", str(photos["astronaut"]), "--prompt", "a chef",
                 "--out", str(out), "--steps", "2", "--width", "64", "--height", "48",
                 "--head-box", "16,8,32,32", "--pose-from", str(photos["tom_hanks"])]) == 0
    assert out.is_file() and (rules.calls, drawn.calls) == (1, 1)


def test_the_python_api_resolves_a_request_once(monkeypatch, photos):
    import facegen.core.control as control

    pipe = load_pipeline("faceclip", "tiny")
    pipe.set_progress_bar_config(disable=True)
    rules, drawn = Counter(monkeypatch, control, "resolve"), Counter(monkeypatch, control, "head_control_image")
    sampling = Counter(monkeypatch, type(pipe.sampling), "resolve")
    pipe("a chef", face_image=photos["astronaut"], head_box=(16, 8, 32, 32), width=64, height=48,
         num_inference_steps=2, output_type="np")
    assert (rules.calls, drawn.calls, sampling.calls) == (1, 1, 1)
    plan = pipe.plan(1, width=64, height=48, num_inference_steps=2)
    with pytest.raises(TypeError, match="not both"):
        pipe("a chef", face_image=photos["astronaut"], plan=plan, guidance_scale=3.0)
