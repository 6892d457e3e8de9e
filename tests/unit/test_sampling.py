"""One rule for sampling values: the CLI, the Python API and the HTTP schema accept exactly the same ones
(methods.base.SAMPLING_BOUNDS); the service's own caps are separate and declared per method."""
import math

import pytest
from facegen.core.errors import BadSampling
from facegen.core.methods.base import SAMPLING_BOUNDS, SamplingConfig, check_sampling

FLAGS = {"steps": "--steps", "guidance_scale": "--guidance", "width": "--width", "height": "--height",
         "num_images": "--num-images"}
REFUSED = [{"steps": 0}, {"steps": 1001}, {"guidance_scale": -3.0}, {"guidance_scale": math.nan}, {"width": 300},
           {"height": 4104}, {"num_images": 0}, {"num_images": 17}]
ACCEPTED = [{"steps": 1}, {"steps": 1000}, {"guidance_scale": 0.0}, {"width": 8}, {"height": 4096}, {"num_images": 16}]


def cli(values: dict, capsys) -> tuple[int, str]:
    from facegen.cli import main

    argv = ["generate", "--face", "missing.jpg", "--prompt", "S* as a chef", "--out", "x.png"]
    for key, value in values.items():
        argv += [FLAGS[key], str(value)]
    code = main(argv)
    return code, capsys.readouterr().err


def http(values: dict) -> bool:
    from facegen.cluster.serving.api import GenerateRequest
    from pydantic import ValidationError

    body = {"method": "dreamidentity", "face_image": "AAAA", "prompt": "S* as a chef"}
    body.update({"num_images" if k == "num_images" else k: v for k, v in values.items()})
    try:
        GenerateRequest.model_validate(body)
        return True
    except ValidationError:
        return False


@pytest.mark.parametrize("values", REFUSED, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_the_cli_http_and_pipeline_refuse_the_same_values(values, capsys):
    with pytest.raises(BadSampling):
        check_sampling(**values)
    code, err = cli(values, capsys)
    assert code == 2 and err.startswith("error: ") and FLAGS[next(iter(values))] in err, err
    assert not http(values)


@pytest.mark.parametrize("values", ACCEPTED, ids=lambda v: "-".join(f"{k}={x}" for k, x in v.items()))
def test_the_cli_http_and_pipeline_accept_the_same_values(values):
    check_sampling(**values)
    assert http(values)


def test_defaults_are_filled_in_at_one_point():
    s = SamplingConfig(steps=30, guidance_scale=7.5, width=512, height=512, negative_prompt="blurry")
    r = s.resolve(steps=5, width=256)
    assert (r.steps, r.guidance_scale, r.width, r.height, r.negative_prompt) == (5, 7.5, 256, 512, "blurry")
    assert s.resolve(guidance_scale=0.0).guidance_scale == 0.0  # 0 is a value, not "unset"
    with pytest.raises(BadSampling, match="steps"):
        s.resolve(steps=SAMPLING_BOUNDS["steps"][1] + 1)
    caps = s.service  # the service's own caps sit beside the defaults, tighter than what any caller may ask
    assert caps.max_steps <= SAMPLING_BOUNDS["steps"][1] and caps.max_images <= SAMPLING_BOUNDS["num_images"][1]
