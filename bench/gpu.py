"""The one-shot GPU benchmark: one command, one JSON record with the device named (also `make bench-gpu`).

    python bench/gpu.py             # on a CUDA GPU, real shapes (random:sd21-base, random:sdxl-base), ≈ 8 minutes
    python bench/gpu.py --dry-run   # the same code at tiny sizes on the CPU: the script works before it meets a GPU

It measures, on the same random real-shape weights:
  - DreamIdentity 512² and FaceCLIP-SDXL 1024², 30 steps: seconds per image, ours vs diffusers' stock
    StableDiffusionPipeline / StableDiffusionXLPipeline (ratio), eager and with torch.compile on the UNet;
  - M² and FaceCLIP face encoding: ms per face at batch 1 and 16;
  - M² training: samples/s/GPU at 512², batch 8, bf16, cached latents (the paper reports ≈ 5.6 on its GPUs);
  - the published FaceCLIP's encoder (official architecture, full size, random weights): ms per conditioning
    (positive + negative) at batch 1 and 4, and its GPU memory;
  - scene switch: DreamIdentity 512² with a head box through a ControlNet in the public OpenPose one's shapes,
    seconds per image ÷ without control;
  - FaceT5-FLUX 1024², bf16, the full FLUX.1-dev transformer and the full FaceT5 encoder (random weights built on
    the GPU): seconds per image, ours vs diffusers' FluxPipeline given the same conditioning (true CFG 3.5), eager
    and with torch.compile on the transformer; ms per conditioning (positive + zero-face negative); GPU memory.
It needs neither Ray nor insightface (neither travels to the lent GPU machine): faces are random aligned tensors and
identities come from the encoders directly. The HTTP round trip ÷ direct call is bench/serve.py's (it needs Ray).
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import record  # noqa: E402

REAL = {"dreamidentity": ("dreamidentity-sd21", "random:sd21-base", 512), "faceclip": ("faceclip-sdxl", "random:sdxl-base", 1024)}
TINY = {"dreamidentity": ("tiny", "tiny:sd21", 64), "faceclip": ("tiny", "tiny:sdxl", 64), "facet5": ("tiny", "tiny:flux", 64)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeat: int) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def preset_for(method: str, dry: bool):
    from facegen.core.config import load_preset

    name, base, _ = (TINY if dry else REAL)[method]
    return load_preset(name, [f"methods.{method}.base_model={base}", "face.model=buffalo_s", "clip.pretrained=null"])


def random_faces(n: int, size: int, device) -> torch.Tensor:
    return (torch.rand(n, 3, size, size, device=device) * 2 - 1)


def identity_of(pipe, method: str, device):
    """A method's identity from a random aligned face, straight through its encoder (no face detection)."""
    from facegen.core.methods.dreamidentity.pipeline import IdTokens
    from facegen.core.methods.faceclip.pipeline import FaceCLIPCondition

    with torch.no_grad():
        if method == "dreamidentity":
            return IdTokens(pipe.m2_encoder(random_faces(1, pipe.m2_encoder.face_size, device))[0])
        vit = pipe.faceclip_encoder.vit
        tokens = vit(random_faces(1, vit.config.img_size, device)).patch_tokens[0]
        embedding = torch.nn.functional.normalize(torch.randn(pipe.faceclip_encoder.fc_config.face_embedding_dim), dim=0)
        return FaceCLIPCondition(embedding.to(device), tokens)


def stock_call(pipe, method: str, identity):
    """diffusers' own pipeline on the same weights and the same conditioning (no face encoder in the loop)."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    if method == "dreamidentity":
        stock = StableDiffusionPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                        unet=pipe.unet, scheduler=pipe.scheduler, safety_checker=None,
                                        feature_extractor=None, requires_safety_checker=False)
        kwargs = {"prompt": "a person as a chef"}
    else:
        embeds, pooled = pipe.encode_prompt_with_identity("a chef", identity)
        neg, neg_pooled = pipe.encode_negative("")
        stock = StableDiffusionXLPipeline(vae=pipe.vae, text_encoder=None, text_encoder_2=None, tokenizer=None,
                                          tokenizer_2=None, unet=pipe.unet, scheduler=pipe.scheduler,
                                          add_watermarker=False)
        dtype = pipe.unet.dtype
        kwargs = {"prompt_embeds": embeds.to(dtype), "pooled_prompt_embeds": pooled.to(dtype),
                  "negative_prompt_embeds": neg.to(dtype), "negative_pooled_prompt_embeds": neg_pooled.to(dtype)}
    stock.set_progress_bar_config(disable=True)
    return stock, kwargs


def bench_generation(method: str, dry: bool, steps: int, compile_unet: bool, device) -> dict:
    from facegen.core.methods import load_pipeline

    _, _, size = (TINY if dry else REAL)[method]
    pipe = load_pipeline(method, preset_for(method, dry), device=device)
    pipe.set_progress_bar_config(disable=True)
    identity = identity_of(pipe, method, device)
    prompt = "S* as a chef" if method == "dreamidentity" else "a chef"
    stock, stock_kwargs = stock_call(pipe, method, identity)
    common = dict(num_inference_steps=steps, width=size, height=size, output_type="latent")
    result = {"size": size, "steps": steps, "dtype": str(pipe.unet.dtype).removeprefix("torch.")}
    for mode in ("eager", "compiled") if compile_unet else ("eager",):
        if mode == "compiled":
            pipe.unet = stock.unet = torch.compile(pipe.unet)
        ours = timed(lambda: pipe(prompt, identity=identity, **common), device, 2)
        theirs = timed(lambda: stock(**stock_kwargs, **common), device, 2)
        result[mode] = {"ours_s_per_image": round(ours, 4), "diffusers_s_per_image": round(theirs, 4),
                        "ratio": round(ours / theirs, 3)}
    # Face encoding, ms per face (the encoder alone: what the service's FaceEncoder replica runs after detection).
    encoder = pipe.m2_encoder if method == "dreamidentity" else pipe.faceclip_encoder.vit
    face = encoder.face_size if method == "dreamidentity" else encoder.config.img_size
    for batch in (1, 16):
        faces = random_faces(batch, face, device)
        with torch.no_grad():
            seconds = timed(lambda faces=faces: encoder(faces), device, 5)
        result[f"encode_ms_per_face_batch{batch}"] = round(1000 * seconds / batch, 3)
    return result


def bench_m2_training(dry: bool, device) -> dict:
    """M² training steps with cached latents: samples/s on this device (bf16 frozen parts on CUDA)."""
    from facegen.core.methods import get_method

    preset = preset_for("dreamidentity", dry)
    resolution, batch = (64, 2) if dry else (512, 8)
    task = get_method("dreamidentity").load_task(preset, device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    optimizer = torch.optim.AdamW([p for p in task.trainable.parameters() if p.requires_grad], lr=1e-5)
    rows = {"face": random_faces(batch, task.trainable.face_size, "cpu"), "prompt": ["a photo of S*"] * batch,
            "latents": torch.randn(batch, 4, resolution // 8, resolution // 8), "target": torch.zeros(batch, 3, 8, 8)}

    def step():
        loss, _ = task(rows)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    seconds = timed(step, device, 3)
    return {"resolution": resolution, "batch_size": batch, "samples_per_s": round(batch / seconds, 3)}


def bench_official_faceclip(dry: bool, device) -> dict:
    """The official FaceCLIP encoder at the published sizes (the tiny preset's in a dry run), random weights."""
    from facegen.core.config import load_preset
    from facegen.core.methods.faceclip.config import OfficialFaceCLIPConfig
    from facegen.core.methods.faceclip.official import OfficialFaceCLIPEncoder

    config = load_preset("tiny").method("faceclip").encoder.official if dry else OfficialFaceCLIPConfig()
    with torch.device("meta"):
        encoder = OfficialFaceCLIPEncoder(config)
    encoder = encoder.to_empty(device=device).eval()  # fp32 weights, bf16 autocast on CUDA (as the pipeline holds it)
    with torch.no_grad():
        for name, t in encoder.state_dict().items():
            t.fill_(1.0) if "running_var" in name else t.normal_(0, 0.02) if t.is_floating_point() else t.zero_()
    result = {"parameters": sum(p.numel() for p in encoder.parameters())}
    if device.type == "cuda":
        result["memory_gb"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    for batch in (1, 4):
        pixels = torch.rand(batch, 3, 112, 112, device=device)

        def condition(pixels=pixels, batch=batch):
            with torch.no_grad():
                e, t = encoder.read_pixels(pixels)
                encoder(["a woman in a denim shirt on a desert plateau"] * batch, e, t)
                encoder.encode_negative(["blurry"] * batch)

        result[f"ms_per_conditioning_batch{batch}"] = round(1000 * timed(condition, device, 3) / batch, 2)
    return result


def bench_scene_switch(dry: bool, steps: int, device) -> dict:
    """DreamIdentity with a head box (ControlNet) ÷ without, same prompt, seed and size."""
    from facegen.core.methods import load_pipeline

    _, _, size = (TINY if dry else REAL)["dreamidentity"]
    preset = preset_for("dreamidentity", dry)
    if not dry:
        preset.method("dreamidentity").controlnet.model = "random:controlnet-sd21-base"
    pipe = load_pipeline("dreamidentity", preset, device=device)
    pipe.set_progress_bar_config(disable=True)
    identity = identity_of(pipe, "dreamidentity", device)
    common = dict(num_inference_steps=steps, width=size, height=size, output_type="latent", identity=identity)
    box = (size // 4, size // 8, size // 2, size // 2)
    plain = timed(lambda: pipe("S* as a chef", **common), device, 2)
    control = timed(lambda: pipe("S* as a chef", head_box=box, **common), device, 2)
    return {"size": size, "steps": steps, "plain_s_per_image": round(plain, 4), "control_s_per_image": round(control, 4),
            "control_over_plain": round(control / plain, 3)}


def facet5_pipeline(dry: bool, device):
    """FaceT5FluxPipeline: tiny in a dry run; else FLUX.1-dev's transformer and VAE configs and the published FaceT5
    sizes, random bf16 weights made on the GPU (no 36 GB download or cache: the lent machine reaches no hub). The
    tokenizers are tiny:flux's (token ids are all the benchmark needs)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from facegen.core.methods import load_pipeline
    from facegen.core.methods.facet5.config import FaceT5Config
    from facegen.core.methods.facet5.encoder import FaceT5FluxEncoder
    from facegen.core.methods.facet5.pipeline import FaceT5FluxPipeline
    from facegen.core.weights import resolve_model
    from transformers import AutoTokenizer, CLIPTokenizer

    if dry:
        return load_pipeline("facet5", preset_for("facet5", True), device=device)
    tiny = resolve_model("tiny:flux")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            transformer = FluxTransformer2DModel(in_channels=64, num_layers=19, num_single_layers=38,
                                                 attention_head_dim=128, num_attention_heads=24,
                                                 joint_attention_dim=4096, pooled_projection_dim=768,
                                                 guidance_embeds=True, axes_dims_rope=(16, 56, 56))
            vae = AutoencoderKL(latent_channels=16, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
                                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                                use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159,
                                scaling_factor=0.3611)
            encoder = FaceT5FluxEncoder(FaceT5Config(), CLIPTokenizer.from_pretrained(tiny / "tokenizer"),
                                        AutoTokenizer.from_pretrained(tiny / "tokenizer_2"))
    finally:
        torch.set_default_dtype(default)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return FaceT5FluxPipeline(transformer=transformer.eval(), vae=vae.eval(), scheduler=scheduler,
                              facet5_encoder=encoder.eval())


def bench_facet5(dry: bool, steps: int, compile_transformer: bool, device) -> dict:
    from diffusers import FluxPipeline
    from facegen.core.methods.facet5.pipeline import FaceT5Condition

    size = 64 if dry else 1024
    pipe = facet5_pipeline(dry, device)
    pipe.set_progress_bar_config(disable=True)
    width = pipe.facet5_encoder.encoder_2.face_patch_proj.in_features
    identity = FaceT5Condition(torch.randn(144, width, device=device, dtype=pipe.transformer.dtype))
    prompt, negative = "a woman in a denim shirt on a rocky desert plateau", "blurry, low quality"

    def conditioning():
        with torch.no_grad():
            return pipe.encode_conditioning([prompt], [negative], identity)

    result = {"size": size, "steps": steps, "dtype": str(pipe.transformer.dtype).removeprefix("torch."),
              "ms_per_conditioning": round(1000 * timed(conditioning, device, 3), 2)}
    if device.type == "cuda":
        result["memory_gb"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    stock = FluxPipeline(scheduler=pipe.scheduler, vae=pipe.vae, text_encoder=None, tokenizer=None,
                         text_encoder_2=None, tokenizer_2=None, transformer=pipe.transformer)
    stock.set_progress_bar_config(disable=True)
    given = conditioning()
    common = dict(num_inference_steps=steps, width=size, height=size, output_type="latent")
    for mode in ("eager", "compiled") if compile_transformer else ("eager",):
        if mode == "compiled":
            pipe.transformer = stock.transformer = torch.compile(pipe.transformer)
        ours = timed(lambda: pipe(prompt, identity=identity, negative_prompt=negative, guidance_scale=3.5, **common),
                     device, 1)
        theirs = timed(lambda: stock(**given, true_cfg_scale=3.5, guidance_scale=1.0, **common), device, 1)
        result[mode] = {"ours_s_per_image": round(ours, 4), "diffusers_s_per_image": round(theirs, 4),
                        "ratio": round(ours / theirs, 3)}
    if device.type == "cuda":
        result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny models on the CPU: check the script, not the GPU")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default 30; 2 in a dry run)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile timings")
    args = p.parse_args(argv)
    device = torch.device("cpu" if args.dry_run or not torch.cuda.is_available() else "cuda")
    if device.type == "cpu" and not args.dry_run:
        print("error: no CUDA GPU here: run with --dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    steps = args.steps or (2 if args.dry_run else 30)
    start = time.perf_counter()
    result = {"dry_run": args.dry_run, "device": str(device)}
    for method in ("dreamidentity", "faceclip"):
        result[method] = bench_generation(method, args.dry_run, steps, not args.no_compile, device)
    result["m2_training"] = bench_m2_training(args.dry_run, device)
    result["faceclip_official_encoder"] = bench_official_faceclip(args.dry_run, device)
    result["scene_switch"] = bench_scene_switch(args.dry_run, steps, device)
    result["facet5"] = bench_facet5(args.dry_run, steps, not args.no_compile, device)
    result["http_over_direct"] = "bench/serve.py (needs Ray, which does not travel to the lent GPU machine)"
    result["seconds"] = round(time.perf_counter() - start, 1)
    record("gpu" if not args.dry_run else "gpu_dry_run", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
