"""The facegen HTTP service as a Ray Serve application (DESIGN.md "HTTP API").

    serve run serve.app:deploy preset=tiny [m2=DIR] [faceclip=DIR] [max_body=BYTES]
    serve deploy serve/config.yaml            # a cluster: replicas, autoscaling, GPUs per deployment

The deployments live in facegen/serving/deployments.py; this file only turns builder arguments into the graph.
"""
from facegen.errors import ConfigError
from facegen.serving.deployments import build_app


def deploy(args: dict):
    """Ray Serve application builder: `serve run serve.app:deploy key=value ...` passes the key=value pairs here."""
    args = dict(args or {})
    cors = args.pop("cors", None)
    max_body = args.pop("max_body", None)
    if max_body is not None and not str(max_body).isdigit():
        raise ConfigError(f"max_body={max_body}: give a number of bytes")
    return build_app(preset=args.pop("preset", "tiny"), m2=args.pop("m2", None), faceclip=args.pop("faceclip", None),
                     max_body=int(max_body) if max_body else None, options=args.pop("options", None),
                     cors=cors.split(",") if isinstance(cors, str) else cors, **_no_more(args))


def _no_more(args: dict) -> dict:
    if args:
        raise ConfigError(f"unknown serve.app:deploy argument(s): {', '.join(args)} "
                         "(known: preset, m2, faceclip, max_body, cors, options)")
    return {}
