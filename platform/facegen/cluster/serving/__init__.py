"""The HTTP service's library side: request schema and errors (api.py), encrypted identity tokens (tokens.py),
request batching (batching.py), provenance (watermark.py), and the Ray Serve deployments by role — replicas.py (the
face encoder and the generators), ingress.py (the HTTP front), app.py (the builder)."""
