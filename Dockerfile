# The storyloom worker image. One image, several roles: `storyloom worker --role llm|image|db|all`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    STORYLOOM_DATA_DIR=/data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY activities ./activities
COPY workflows_temporal ./workflows_temporal
COPY starter ./starter
COPY emulators ./emulators
COPY bench ./bench
COPY comfy_templates ./comfy_templates
RUN pip install --no-cache-dir . && useradd --create-home --uid 10001 storyloom \
    && mkdir -p /data && chown storyloom /data
USER storyloom
VOLUME ["/data"]
ENTRYPOINT ["storyloom"]
CMD ["worker", "--role", "all"]
