"""The facegen HTTP service as a Ray Serve application (docs/DESIGN.md "HTTP API").

    serve run serve.app:deploy preset=tiny [methods=dreamidentity,faceclip] [dreamidentity=DIR] [faceclip=DIR]
                                [max_body=BYTES] [cors=https://app.example]
    serve deploy serve/config.yaml            # a cluster: replicas, autoscaling, GPUs per deployment

The builder's arguments are one typed (pydantic) model, `AppArgs`, with a field per registered method for its
trained encoder; a mistake fails `serve run` at once with the argument named. The deployments live in
facegen/cluster/serving/ (replicas.py, ingress.py, app.py).
"""
from __future__ import annotations

from facegen.cluster.serving.api import DEFAULT_MAX_BODY, BodyLimits
from facegen.core.errors import ConfigError, ModelNotFound
from facegen.core.methods import NAMES
from facegen.core.models.export import check_export
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator


class _AppArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    preset: str = Field("tiny", description="a shipped preset name or a .yaml file")
    methods: list[str] | None = Field(None, description="methods to serve (default: every method the preset offers)")
    max_body: int = Field(DEFAULT_MAX_BODY, gt=0, description="largest request body, bytes")
    body_timeout_s: float = Field(BodyLimits.timeout_s, gt=0, description="a request body must arrive within this")
    body_min_rate: float = Field(BodyLimits.min_rate, gt=0,
                                 description="bytes a second a body must average after the first seconds (else 408)")
    uploads_per_client: int = Field(BodyLimits.per_client, gt=0,
                                    description="bodies one client (API key, else address) may send at once (else 429)")
    cors: list[str] | None = Field(None, description="origins allowed to call the API from a browser")
    keys: list[str] | None = Field(None, description="API keys (default: FACEGEN_API_KEYS)")
    token_ttl_s: float = Field(24 * 3600, gt=0, description="how long an identity token stays valid, seconds")
    options: dict[str, dict] = Field(default_factory=dict, description="deployment name → .options(...)")
    # Safe defaults for a real (non-tiny) preset: a service with untrained encoders, or open to anyone, starts only
    # when its config says so in words.
    allow_fresh_encoders: bool = Field(False, description="serve a method with no trained encoder (a real preset)")
    allow_open: bool = Field(False, description="serve with no API keys (a real preset)")

    @field_validator("methods", "cors", mode="before")
    @classmethod
    def _comma_list(cls, value):
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self):
        from facegen.core.config import load_preset

        preset = load_preset(self.preset)
        offered = preset.method_names
        if self.methods is None:
            self.methods = offered
        unknown = [m for m in self.methods if m not in NAMES]
        if unknown:
            raise ValueError(f"methods: unknown method '{unknown[0]}' (known: {', '.join(NAMES)})")
        missing = [m for m in self.methods if m not in offered]
        if missing:
            raise ValueError(f"methods: preset '{self.preset}' does not configure '{missing[0]}' "
                             f"(it offers: {', '.join(offered) or 'none'})")
        if not self.methods:
            raise ValueError("methods: nothing to serve")
        for m in self.methods:
            try:
                preset.method(m).check_model(getattr(self, m), preset.face)
            except ConfigError as e:
                raise ValueError(str(e)) from None
        if not preset.allow_tiny:  # a real preset: what a real user would reach
            fresh = [m for m in self.methods if not (getattr(self, m) or preset.method(m).model)]
            if fresh and not self.allow_fresh_encoders:
                raise ValueError(f"{fresh[0]}: no trained encoder given for preset '{self.preset}' (its pictures would "
                                 f"not look like the person): give {fresh[0]}=DIR (a training job's <output>/model), or "
                                 "set allow_fresh_encoders=true to serve it untrained")
            if not (self.keys or _env_keys()) and not self.allow_open:
                raise ValueError("keys: no API keys for preset '" + self.preset + "': set FACEGEN_API_KEYS where the "
                                 "application runs (serve/config.yaml's runtime_env; see README \"API keys\"), or "
                                 "set allow_open=true to serve without keys")
        for m in NAMES:
            directory = getattr(self, m)
            if directory and m not in self.methods:
                raise ValueError(f"{m}={directory}: method '{m}' is not served (methods={','.join(self.methods)})")
            if directory:
                try:
                    check_export(directory)
                except ModelNotFound as e:
                    raise ValueError(f"{m}={e}") from None
        return self


def _env_keys() -> list[str]:
    from facegen.cluster.serving.api import api_keys

    return api_keys()


# One optional field per registered method: the encoder a training job exported for it.
AppArgs = create_model("AppArgs", __base__=_AppArgs, **{
    m: (str | None, Field(None, description=f"an exported {m} encoder (<train output>/model, or a converted published "
                                            "model)")) for m in NAMES})


def parse_args(args: dict | None) -> BaseModel:
    """Builder arguments → AppArgs; any mistake is a ConfigError that names the argument."""
    try:
        return AppArgs.model_validate(dict(args or {}))
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        message = str(first.get("msg", e)).removeprefix("Value error, ")
        if first.get("type") == "extra_forbidden":
            message = f"unknown serve.app:deploy argument (known: {', '.join(AppArgs.model_fields)})"
        raise ConfigError(f"{where}: {message}" if where else message) from None


def deploy(args: dict):
    """Ray Serve application builder: `serve run serve.app:deploy key=value ...` passes the key=value pairs here."""
    from facegen.cluster.serving.app import build_app

    return build_app(parse_args(args))
