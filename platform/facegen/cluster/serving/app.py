"""The application builder: the deployments composed from the method registry and the preset (`serve run
serve.app:deploy`, whose typed arguments are serve/app.py's AppArgs), and what `GET /v1/models` reports."""

from dataclasses import asdict

from facegen.cluster.serving import tokens
from facegen.cluster.serving.api import BodyLimits
from facegen.cluster.serving.ingress import IngressDeployment
from facegen.cluster.serving.replicas import FaceEncoder, generator_deployment, public_name, served_default_size
from facegen.core.methods import get_method
from facegen.core.methods.base import work_budget


def build_app(args) -> object:
    """The application graph for checked builder arguments (serve/app.py's AppArgs): a generator for each served
    method, one face encoder for them all, the ingress. `args.options` maps a deployment name to `.options(...)`
    (replicas, autoscaling, GPUs)."""
    keys = tokens.token_keys()
    models = {m: getattr(args, m) for m in args.methods}

    def bind(deployment, *bind_args):
        return deployment.options(**args.options.get(deployment.name, {})).bind(*bind_args)

    encoder = bind(FaceEncoder, args.preset, models, keys, args.token_ttl_s)
    generators = {m: bind(generator_deployment(m), m, args.preset, models[m], keys) for m in args.methods}
    info = model_info(args.preset, models)
    preset_name = next(iter(info.values()))["preset"]  # the preset's name, never a server path to its file
    body = BodyLimits(max_bytes=args.max_body, timeout_s=args.body_timeout_s, min_rate=args.body_min_rate,
                      per_client=args.uploads_per_client)
    return bind(IngressDeployment, encoder, generators, preset_name, args.max_body, info, args.cors, args.keys, body)


def model_info(preset: str, models: dict) -> dict:
    """Per served method, what its replicas load, by name (no server paths): `GET /v1/models`."""
    from facegen.core.config import load_preset

    p = load_preset(preset)
    info = {}
    for method, model in models.items():
        section = p.method(method)
        s = section.sampling
        info[method] = {"method": method, "preset": p.name, "base_model": public_name(section.base_model),
                        "encoder": public_name(model), "dtype": section.dtype,
                        "default_size": list(served_default_size(s)),
                        "steps": s.steps, "guidance_scale": s.guidance_scale, "negative_prompt": s.negative_prompt,
                        "max_megapixel_steps": work_budget(section), "native_pixels": get_method(method).native_pixels,
                        "service_caps": asdict(s.service),
                        "control": {"model": public_name(section.controlnet.model) if section.controlnet.model else None,
                                    "render": section.controlnet.render, "scale": section.controlnet.scale,
                                    "start": section.controlnet.start, "end": section.controlnet.end}}
    return info
