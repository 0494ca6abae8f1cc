# syntax=docker/dockerfile:1
# Multi-stage: build wheels (with the generated gRPC code) in a full image, run slim as non-root.
# The s3 extra (boto3) is included: DS_REGISTRY_DIR / DS_LOG_DIR may be s3://bucket/prefix.
FROM python:3.11-slim AS build
WORKDIR /src
RUN pip install --no-cache-dir --upgrade pip grpcio-tools setuptools wheel
COPY pyproject.toml README.md ./
COPY protos protos
COPY decision_service decision_service
COPY offline offline
# Same codegen as `make proto`: generated modules live in decision_service/_generated.
RUN mkdir -p decision_service/_generated \
 && python -m grpc_tools.protoc -Idecision_service/_generated=protos --python_out=. --grpc_python_out=. \
      decision_service/_generated/decision/v1/decision_service.proto \
 && find decision_service/_generated -type d -exec touch {}/__init__.py \; \
 && pip wheel --no-cache-dir --wheel-dir /wheels '.[s3]'

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app app && mkdir -p /app /data && chown app /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER app
WORKDIR /app
# The project served (decision_service/project.py): mount your own over /app/project, or set
# DS_PROJECT; the image carries the synthetic example.
COPY --chown=app examples/synthetic /app/project
ENV DS_PROJECT=/app/project \
    DS_REGISTRY_DIR=/data/registry \
    DS_LOG_DIR=/data/logs \
    DS_HOST=0.0.0.0 \
    DS_PORT=50051 \
    DS_DATA_DIR=/data \
    PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 50051
# The gRPC health service: SERVING only once model, index and Redis are ready.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["decision-service", "health", "--address", "127.0.0.1:50051"]
ENTRYPOINT ["decision-service"]
CMD ["serve"]
