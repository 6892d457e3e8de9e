# The image cluster.yaml runs: Ray 2.60 with CUDA, plus facegen and its pinned dependencies.
#   docker build -t facegen:latest .
FROM rayproject/ray:2.60.0-py311-gpu
WORKDIR /home/ray/facegen
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users platform ./platform
COPY --chown=ray:users jobs ./jobs
COPY --chown=ray:users serve ./serve
RUN pip install --no-cache-dir -e . \
 && python -c "import facegen, ray; print('facegen ok, ray', ray.__version__)"
ENV FACEGEN_CACHE=/home/ray/.cache/facegen \
    TORCH_EXTENSIONS_DIR=/home/ray/.cache/facegen/torch_extensions
