"""FaceCLIP (SDXL): one joint encoder turns (face, prompt) into SDXL's whole conditioning."""
from facegen.core.methods.base import Converter, Method
from facegen.core.methods.faceclip.config import FaceCLIPConfig

METHOD = Method(
    name="faceclip",
    title="FaceCLIP",
    base="sdxl",
    job="train_faceclip",
    config=FaceCLIPConfig,
    pipeline="facegen.core.methods.faceclip.pipeline:FaceCLIPSDXLPipeline",
    identity="facegen.core.methods.faceclip.pipeline:FaceCLIPCondition",
    task="facegen.core.methods.faceclip.training:FaceCLIPTask",
    needs_placeholder=False,
    summary="SDXL + FaceCLIP encoder: face and prompt in, SDXL's conditioning out",
    converters=(Converter(
        name="faceclip-official", function="facegen.core.methods.faceclip.convert:convert_official",
        files=(("encoder", "face_clip_encoder.pt", True),
               ("unet", "unet.pt (the fine-tuned SDXL UNet; without it the base UNet is used)", False)),
        preset="faceclip-official",
        help="ByteDance's FaceCLIP-SDXL (hub ByteDance/FaceCLIP, model/*.pt; CC-BY-NC-4.0)"),),
)
