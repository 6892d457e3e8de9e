"""The library: face analysis, models, methods (pipelines, encoders, training tasks) and the typed presets. It runs
with torch, diffusers and insightface alone — never Ray, pandas or pyarrow, and nothing of `facegen.cluster`
(tests/unit/test_layers.py holds it to that)."""
