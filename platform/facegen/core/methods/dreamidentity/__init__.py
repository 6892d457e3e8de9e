"""DreamIdentity: an M² encoder writes a face into the prompt as the pseudo-words "S*" — on SD 2.1 (the paper's base)
and on SDXL (both text towers; SD 2.1 left the hub in 2025). One method, two registry entries: what differs is the
base family and the section's defaults."""
from facegen.core.methods.base import Method
from facegen.core.methods.dreamidentity.config import DreamIdentityConfig, DreamIdentitySDXLConfig

PARTS = dict(pipeline="facegen.core.methods.dreamidentity.pipeline:DreamIdentityPipeline",
             identity="facegen.core.methods.dreamidentity.pipeline:IdTokens",
             task="facegen.core.methods.dreamidentity.training:DreamIdentityTask",
             needs_placeholder=True, job="train_m2")

METHOD = Method(name="dreamidentity", title="DreamIdentity", base="sd21", config=DreamIdentityConfig,
                summary="SD 2.1 + M² encoder: the face as pseudo-words S* in the prompt", **PARTS)
METHOD_SDXL = Method(name="dreamidentity-sdxl", title="DreamIdentitySDXL", base="sdxl", config=DreamIdentitySDXLConfig,
                     summary="SDXL + M² encoder: the face as pseudo-words S* in both text towers", **PARTS)
