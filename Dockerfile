# syntax=docker/dockerfile:1
# VLM Playground on a CUDA-enabled PyTorch base. Build and run: see deploy/README.md.
# Not built on the development machines (they have no Docker engine); linted with hadolint in tests/cli/test_deploy.py.
#
#   docker build -t vlm-playground .                                  # with the pinned runtimes (needs the network)
#   docker build --build-arg PREPARE_RUNTIMES=0 -t vlm-playground .   # without: created on first use instead
#   docker run --gpus all -p 8000:8000 -v vlm-data:/data -v hf-cache:/hf-cache vlm-playground

# torch, torchvision and CUDA come from the base image (conda Python under /opt/conda, 3.11 by default in PyTorch's
# image builds: the runtime pins were measured on 3.11); pip never replaces them.
FROM pytorch/pytorch:2.9.1-cuda12.8-cudnn9-runtime

ARG PREPARE_RUNTIMES=1

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VLM_DATA_DIR=/data \
    HF_HOME=/hf-cache

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN groupadd --gid 1000 app \
    && useradd --uid 1000 --gid app --create-home --shell /usr/sbin/nologin app \
    && mkdir -p /data /hf-cache \
    && chown app:app /data /hf-cache

WORKDIR /app

# The wheel carries templates/ and static/ as package data. The `postgres` extra adds the driver for
# DATABASE_URL=postgresql+psycopg://... The constraints file pins torch and torchvision to the base image's
# builds, so the dependency resolver can only keep them.
COPY pyproject.toml README.md ./
COPY app ./app
COPY templates ./templates
COPY static ./static
RUN pip list --format=freeze | grep -E '^(torch|torchvision)==' > /tmp/base-torch.txt \
    && pip install --no-cache-dir -c /tmp/base-torch.txt '.[postgres]' \
    && rm /tmp/base-torch.txt \
    && vlm-playground --help > /dev/null

COPY models.yaml ./models.yaml

# Pinned runtimes (app/pool/runtimes.py: <data-dir>/runtimes/<name>), prepared as the app user before /data is
# declared a volume: content written after VOLUME would be discarded, and a new named volume mounted at /data
# starts as a copy of this content. A bind mount at /data hides it; the runtimes are then created on first use.
USER 1000:1000
RUN if [ "${PREPARE_RUNTIMES}" = "1" ]; then \
        for runtime in hf-4.48 hf-4.41 hf-4.36; do \
            vlm-playground runtimes prepare "${runtime}" --models /app/models.yaml --data-dir /data || exit 1; \
        done; \
        vlm-playground runtimes --models /app/models.yaml --data-dir /data; \
    fi

VOLUME ["/data", "/hf-cache"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]

CMD ["vlm-playground", "serve", "--host", "0.0.0.0", "--models", "/app/models.yaml"]
