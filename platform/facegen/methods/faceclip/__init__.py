"""FaceCLIP (SDXL): one joint encoder turns (face, prompt) into SDXL's whole conditioning."""
from facegen.methods.base import Method
from facegen.methods.faceclip.config import FaceCLIPConfig

METHOD = Method(
    name="faceclip",
    title="FaceCLIP",
    config=FaceCLIPConfig,
    pipeline="facegen.methods.faceclip.pipeline:FaceCLIPSDXLPipeline",
    identity="facegen.methods.faceclip.pipeline:FaceCLIPCondition",
    task="facegen.methods.faceclip.training:FaceCLIPTask",
    needs_placeholder=False,
    summary="SDXL + FaceCLIP encoder: face and prompt in, SDXL's conditioning out",
)
