"""DreamIdentity (SD 2.1): an M² encoder writes a face into the prompt as the pseudo-words "S*"."""
from facegen.core.methods.base import Method
from facegen.core.methods.dreamidentity.config import DreamIdentityConfig

METHOD = Method(
    name="dreamidentity",
    title="DreamIdentity",
    config=DreamIdentityConfig,
    pipeline="facegen.core.methods.dreamidentity.pipeline:DreamIdentityPipeline",
    identity="facegen.core.methods.dreamidentity.pipeline:IdTokens",
    task="facegen.core.methods.dreamidentity.training:DreamIdentityTask",
    needs_placeholder=True,
    summary="SD 2.1 + M² encoder: the face as pseudo-words S* in the prompt",
)
