"""Scene switch: the keypoint map drawn where the head box says, and both pipelines' control equal to diffusers' own
ControlNet pipelines given the same prompt embeddings."""
import numpy as np
import PIL.Image
import pytest
import torch
from facegen.core.control import (
    FRONTAL_KPS,
    KPS_COLORS,
    OPENPOSE_POINT_COLORS,
    ControlImageResized,
    box_iou,
    check_head_box,
    head_control_image,
    openpose_head,
    parse_head_box,
    place_keypoints,
)
from facegen.core.errors import BadControl, InvalidImage, NoFaceFound


def centroid(img: PIL.Image.Image, color) -> np.ndarray:
    a = np.asarray(img)
    ys, xs = np.nonzero(np.all(a == np.array(color, np.uint8), axis=-1))
    assert len(xs), f"no pixel of colour {color}"
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("box", [(40, 30, 64, 80), (150, 10, 96, 96)])
def test_keypoint_map_is_drawn_in_the_box(box):
    img = head_control_image(256, 192, box, None, "keypoints")
    expected = place_keypoints(FRONTAL_KPS, np.array([0, 0, 112, 112]), box)
    for kp, color in zip(expected, KPS_COLORS):  # read each dot back by its colour
        np.testing.assert_allclose(centroid(img, color), kp, atol=1.0)
    ys, xs = np.nonzero(np.asarray(img).max(-1))
    x, y, w, h = box
    assert xs.min() >= x and xs.max() < x + w and ys.min() >= y and ys.max() < y + h  # nothing drawn outside it


def test_openpose_map_places_eyes_nose_and_neck():
    box = (60, 40, 100, 120)
    img = head_control_image(256, 256, box, None, "openpose")
    kps = place_keypoints(FRONTAL_KPS, np.array([0, 0, 112, 112]), box)
    points = openpose_head(kps)
    for name in ("nose", "r_eye", "l_eye", "neck"):
        np.testing.assert_allclose(centroid(img, OPENPOSE_POINT_COLORS[name]), points[name], atol=1.5)
    assert points["neck"][1] > kps[3][1] > points["nose"][1] > points["r_eye"][1]  # neck below mouth below nose


def test_a_pose_photos_face_is_moved_into_the_box(analyzer, photos):
    _, face = analyzer.largest(photos["astronaut"])
    img = head_control_image(200, 200, (20, 30, 90, 110), (face.kps, face.bbox), "keypoints")
    placed = place_keypoints(face.kps, face.bbox, (20, 30, 90, 110))
    np.testing.assert_allclose(centroid(img, KPS_COLORS[2]), placed[2], atol=1.0)  # the nose
    assert 20 <= placed[:, 0].min() and placed[:, 0].max() <= 110


def test_head_box_checks():
    assert parse_head_box("10, 20,30,40") == (10, 20, 30, 40)
    for text in ("10,20,30", "a,b,c,d", ""):
        with pytest.raises(BadControl, match="x,y,w,h"):
            parse_head_box(text)
    with pytest.raises(BadControl, match="positive"):
        check_head_box((10, 10, 0, 20), 128, 128)
    with pytest.raises(BadControl, match="does not lie on the 128×96 image"):
        check_head_box((100, 10, 40, 20), 128, 96)
    with pytest.raises(BadControl, match="four numbers"):
        check_head_box((1, 2, 3), 128, 96)
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)


def ddim(n=3):
    return dict(num_inference_steps=n, output_type="np")


def test_dreamidentity_control_equals_diffusers_controlnet_pipeline(tiny_pipe, photos):
    from diffusers import StableDiffusionControlNetPipeline

    pipe = tiny_pipe
    identity = pipe.encode_identity(photos["astronaut"])
    kw = dict(prompt="S* as a chef", identity=identity, width=128, height=128, **ddim())
    box = (32, 24, 64, 80)
    plain = pipe(**kw, generator=torch.Generator().manual_seed(3)).images
    off = pipe(**kw, head_box=box, face_image=photos["astronaut"], control_scale=0.0,
               generator=torch.Generator().manual_seed(3)).images
    np.testing.assert_allclose(off, plain, atol=1e-5)  # scale 0: the image without control
    on = pipe(**kw, head_box=box, face_image=photos["astronaut"], generator=torch.Generator().manual_seed(3)).images
    assert np.abs(on - plain).max() > 1e-3  # the (random tiny) ControlNet acts
    tokens = identity.tokens.to(pipe.text_encoder.dtype)
    embeds = pipe.encode_prompt_with_identity(["S* as a chef"], tokens)["prompt_embeds"]
    neg = pipe.encode_prompt_with_identity([""], tokens, require_placeholder=False)["prompt_embeds"]
    _, face = pipe.face_analyzer.largest(photos["astronaut"])
    control_image = head_control_image(128, 128, box, (face.kps, face.bbox), pipe.control_config.render)
    stock = StableDiffusionControlNetPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                              unet=pipe.unet, controlnet=pipe.controlnet, scheduler=pipe.scheduler,
                                              safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    stock.set_progress_bar_config(disable=True)
    theirs = stock(prompt_embeds=embeds, negative_prompt_embeds=neg, image=control_image, width=128, height=128,
                   guidance_scale=pipe.config.guidance_scale, generator=torch.Generator().manual_seed(3), **ddim()).images
    np.testing.assert_allclose(on, theirs, atol=1e-5)


def test_faceclip_control_equals_diffusers_sdxl_controlnet_pipeline(photos):
    from diffusers import StableDiffusionXLControlNetPipeline
    from facegen.core.methods.faceclip.pipeline import FaceCLIPSDXLPipeline

    pipe = FaceCLIPSDXLPipeline.from_preset("tiny")
    pipe.set_progress_bar_config(disable=True)
    identity = pipe.encode_identity(photos["astronaut"])
    control_image = PIL.Image.fromarray((np.random.default_rng(0).random((48, 64, 3)) * 255).astype(np.uint8))
    kw = dict(prompt="a chef", identity=identity, width=64, height=48, **ddim(2))
    plain = pipe(**kw, generator=torch.Generator().manual_seed(1)).images
    off = pipe(**kw, control_image=control_image, control_scale=0.0, generator=torch.Generator().manual_seed(1)).images
    np.testing.assert_allclose(off, plain, atol=1e-5)
    on = pipe(**kw, control_image=control_image, control_start=0.0, control_end=0.5,
              generator=torch.Generator().manual_seed(1)).images
    assert np.abs(on - plain).max() > 1e-3
    embeds, pooled = pipe.encode_prompt_with_identity("a chef", identity)
    neg, neg_pooled = pipe.encode_negative("")
    stock = StableDiffusionXLControlNetPipeline(vae=pipe.vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                                tokenizer_2=None, unet=pipe.unet, controlnet=pipe.controlnet,
                                                scheduler=pipe.scheduler, add_watermarker=False)
    stock.set_progress_bar_config(disable=True)
    theirs = stock(prompt_embeds=embeds, pooled_prompt_embeds=pooled, negative_prompt_embeds=neg,
                   negative_pooled_prompt_embeds=neg_pooled, image=control_image, control_guidance_start=0.0,
                   control_guidance_end=0.5, width=64, height=48, guidance_scale=pipe.config.guidance_scale,
                   generator=torch.Generator().manual_seed(1), **ddim(2)).images
    np.testing.assert_allclose(on, theirs, atol=1e-5)
    with pytest.warns(ControlImageResized, match="resized to the 128×96"):  # another size: resized, and said so
        pipe(prompt="a chef", identity=identity, width=128, height=96, control_image=control_image, **ddim(1))


def test_bad_control_inputs(tiny_pipe, photos, tmp_path):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    kw = dict(prompt="S* as a chef", face_image=photos["astronaut"], width=128, height=128, num_inference_steps=1)
    cases = [
        (dict(head_box=(100, 100, 64, 64)), BadControl, "does not lie on"),
        (dict(head_box=(0, 0, 0, 10)), BadControl, "positive"),
        (dict(control_image=junk), InvalidImage, ""),
        (dict(head_box=(0, 0, 64, 64), pose_image=photos["no_face"]), NoFaceFound, "pose photo"),
        (dict(pose_image=photos["astronaut"]), BadControl, "needs head_box"),
        (dict(head_box=(0, 0, 64, 64), control_image=photos["astronaut"]), BadControl, "not both"),
        (dict(head_box=(0, 0, 64, 64), control_scale=-1), BadControl, "control_scale"),
        (dict(head_box=(0, 0, 64, 64), control_start=0.8, control_end=0.2), BadControl, "start < end"),
    ]
    for extra, error, message in cases:
        with pytest.raises(error, match=message):
            tiny_pipe(**kw, **extra)
    from facegen.core.methods.base import ControlNetConfig

    saved = tiny_pipe.control_config
    tiny_pipe.control_config, tiny_pipe.controlnet = ControlNetConfig(model=None), None
    try:

        with pytest.raises(BadControl, match="controlnet.model"):
            tiny_pipe(**kw, head_box=(0, 0, 64, 64))
    finally:
        tiny_pipe.control_config = saved


def test_facet5_control_equals_diffusers_flux_controlnet_pipeline(photos):
    """FaceT5-FLUX's scene switch is diffusers' FluxControlNetPipeline (tiny:controlnet-flux, from tiny:flux's
    transformer) given our conditioning, and a head box moves the picture."""
    from diffusers import FluxControlNetPipeline
    from facegen.core.methods.facet5.pipeline import FaceT5FluxPipeline

    pipe = FaceT5FluxPipeline.from_preset("tiny")
    pipe.set_progress_bar_config(disable=True)
    identity = pipe.encode_identity(photos["astronaut"])
    kw = dict(prompt="a chef", identity=identity, width=64, height=48, num_inference_steps=2)
    plain = pipe(**kw, output_type="np", generator=torch.Generator().manual_seed(1)).images
    box = dict(head_box=(16, 8, 32, 32), face_image=photos["astronaut"])
    on = pipe(**kw, **box, control_end=0.5, output_type="np", generator=torch.Generator().manual_seed(1)).images
    assert np.abs(on - plain).max() > 1e-4
    control = pipe.plan(1, head_box=(16, 8, 32, 32), face_image=photos["astronaut"], width=64, height=48).control
    stock = FluxControlNetPipeline(scheduler=pipe.scheduler, vae=pipe.vae, text_encoder=None, tokenizer=None,
                                   text_encoder_2=None, tokenizer_2=None, transformer=pipe.transformer,
                                   controlnet=pipe.controlnet)
    stock.set_progress_bar_config(disable=True)
    conditioning = pipe.encode_conditioning(["a chef"], [""], identity)
    # The noise drawn first from the request's generator, as FluxPipeline draws it without control (the FLUX family's
    # prepare_call): diffusers' ControlNet pipeline would sample the control image's latents first.
    g = torch.Generator().manual_seed(1)
    latents, _ = stock.prepare_latents(1, pipe.transformer.config.in_channels // 4, 48, 64,
                                       conditioning["prompt_embeds"].dtype, "cpu", g)
    theirs = stock(**conditioning, control_image=control.image, latents=latents,
                   control_guidance_end=0.5, true_cfg_scale=3.5, guidance_scale=1.0, width=64, height=48,
                   num_inference_steps=2, output_type="np", generator=g).images
    np.testing.assert_allclose(on, theirs, atol=1e-5)
