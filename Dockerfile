# saegap image for workers and the UI. Python 3.11 slim; torch comes from TORCH_INDEX_URL
# (default: the CUDA 12.4 wheels, for GPU workers; pass
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for a CPU-only image).
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_DISABLE_TELEMETRY=1

RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*
WORKDIR /app

# torch first, from its own index, so installing the project never pulls another build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch>=2.4"
COPY pyproject.toml ./
COPY saegap ./saegap
COPY schema ./schema
COPY worker ./worker
COPY analysis ./analysis
COPY ui ./ui
COPY models ./models
RUN pip install .

ENV SAEGAP_MODELS=/app/models SAEGAP_DATA=/data
VOLUME ["/data"]
EXPOSE 8501
CMD ["saegap", "--help"]
