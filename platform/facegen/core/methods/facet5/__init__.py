"""FaceT5-FLUX: ByteDance's FaceT5 encoder (T5-XXL fused with the face) conditions FLUX.1-dev."""
from facegen.core.methods.base import Converter, Method
from facegen.core.methods.facet5.config import FaceT5FluxConfig

METHOD = Method(
    name="facet5",
    title="FaceT5",
    base="flux",
    job="train_facet5",
    config=FaceT5FluxConfig,
    pipeline="facegen.core.methods.facet5.pipeline:FaceT5FluxPipeline",
    identity="facegen.core.methods.facet5.pipeline:FaceT5Condition",
    task="facegen.core.methods.facet5.training:FaceT5Task",
    needs_placeholder=False,
    summary="FLUX.1-dev + FaceT5 encoder: face and prompt in, FLUX's conditioning out",
    converters=(Converter(
        name="facet5-flux", function="facegen.core.methods.facet5.convert:convert",
        files=(("encoder", "face_t5_encoder.pt", True),
               ("dit", "dit.pt (the fine-tuned FLUX transformer; without it the base one is used)", False)),
        preset="facet5-flux",
        help="ByteDance's FaceT5-FLUX (hub ByteDance/FaceCLIP, model/*.pt; CC-BY-NC-4.0)"),),
)
