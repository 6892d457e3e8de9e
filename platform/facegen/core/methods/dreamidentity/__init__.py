"""DreamIdentity: an M² encoder writes a face into the prompt as the pseudo-words "S*"."""
from facegen.core.methods.base import Method
from facegen.core.methods.dreamidentity.config import DreamIdentityConfig

PARTS = dict(pipeline="facegen.core.methods.dreamidentity.pipeline:DreamIdentityPipeline",
             identity="facegen.core.methods.dreamidentity.pipeline:IdTokens",
             task="facegen.core.methods.dreamidentity.training:DreamIdentityTask",
             needs_placeholder=True, job="train_m2")

METHOD = Method(name="dreamidentity", title="DreamIdentity", base="sd21", config=DreamIdentityConfig,
                summary="SD 2.1 + M² encoder: the face as pseudo-words S* in the prompt", **PARTS)
