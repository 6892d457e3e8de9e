"""Shared model components: the face ViT (face_vit.py), the CLIP scorer (clip_scorer.py), placeholder tokens
(tokens.py) and the export format (export.py). The methods' own encoders live in facegen/core/methods/<method>/.
This package file loads nothing, so `facegen.core.models.config` stays light."""
