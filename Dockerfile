# smart-maintenance: the flow and its CLI in one image.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY smart_maintenance ./smart_maintenance
# the CPU build of torch (sentence-transformers needs it; the default wheel is the multi-GB CUDA one)
RUN pip install --extra-index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install .
RUN useradd --create-home sm && mkdir -p /data && chown sm /data
USER sm
WORKDIR /data
ENTRYPOINT ["smart-maintenance"]
CMD ["--help"]
