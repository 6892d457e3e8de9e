"""Face detection, alignment and face embeddings: `FaceAnalyzer` (analyzer.py), `align_face` (align.py),
`load_image` (images.py), `FaceAnalyzerConfig` (config.py). Import the submodules; this package file loads nothing."""
