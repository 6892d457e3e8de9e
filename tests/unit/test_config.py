import pytest
from facegen.config import PRESETS, load_preset
from facegen.errors import ConfigError


@pytest.mark.parametrize("name", PRESETS)
def test_shipped_presets_load_typed(name):
    p = load_preset(name)
    assert p.name == name
    assert isinstance(p.m2.num_tokens, int) and isinstance(p.dreamidentity.guidance_scale, float)


def test_paper_settings():
    p = load_preset("dreamidentity-sd21")
    assert (p.dreamidentity.steps, p.dreamidentity.guidance_scale, p.dreamidentity.scheduler) == (30, 7.5, "ddim")
    assert (p.m2.num_tokens, p.m2.reg_weight, p.m2.token_dim) == (2, 1e-4, 1024)
    x = load_preset("faceclip-sdxl")
    assert (x.faceclip.width, x.faceclip.height, x.faceclip.guidance_scale) == (864, 1152, 5.0)
    assert x.face.model == "antelopev2"


def test_overrides_are_typed():
    p = load_preset("tiny", ["m2.num_tokens=3", "dreamidentity.guidance_scale=4", "m2.taps=[1,2]", "sd21=/x/y"])
    assert p.m2.num_tokens == 3 and p.dreamidentity.guidance_scale == 4.0 and isinstance(p.dreamidentity.guidance_scale, float)
    assert p.m2.taps == [1, 2] and p.sd21 == "/x/y"


@pytest.mark.parametrize(
    "override, needle",
    [
        ("m2.nope=1", "m2.nope"),
        ("nope=1", "nope"),
        ("m2.num_tokens=two", "m2.num_tokens"),
        ("m2.vit.depth=1.5", "m2.vit.depth"),
        ("m2.train_vit=maybe", "m2.train_vit"),
        ("m2=3", "m2"),
        ("no-equals-sign", "key.sub=value"),
    ],
)
def test_bad_override_names_the_key(override, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_preset("tiny", [override])


def test_unknown_preset_and_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        load_preset("huge")
    f = tmp_path / "mine.yaml"
    f.write_text("m2:\n  num_tokens: 4\n")
    assert load_preset(f).m2.num_tokens == 4
    f.write_text("m2: [1, 2\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_preset(f)
