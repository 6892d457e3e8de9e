"""DreamIdentity (SD 2.1): an M² encoder writes a face into the prompt as the pseudo-words "S*"."""
from facegen.methods.base import Method
from facegen.methods.dreamidentity.config import DreamIdentityConfig

METHOD = Method(
    name="dreamidentity",
    title="DreamIdentity",
    config=DreamIdentityConfig,
    pipeline="facegen.methods.dreamidentity.pipeline:DreamIdentityPipeline",
    identity="facegen.methods.dreamidentity.pipeline:IdTokens",
    task="facegen.methods.dreamidentity.training:DreamIdentityTask",
    needs_placeholder=True,
    summary="SD 2.1 + M² encoder: the face as pseudo-words S* in the prompt",
)
