"""Datasets: the self-augmented editability set and FFHQ ingest (build.py, stages.py), their schema and storage."""
