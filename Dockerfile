# One image for both Neurelay components: `neurelay gateway` (the default) and
# `neurelay operator` (the chart overrides the command).
#
#   docker build -t REGISTRY/neurelay:0.1.0 .
#   docker push REGISTRY/neurelay:0.1.0

FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/neurelay
COPY pyproject.toml README.md ./
COPY neurelay ./neurelay
RUN /opt/neurelay/bin/pip install --no-cache-dir .

FROM python:3.11.11-slim-bookworm
RUN groupadd --system --gid 10001 neurelay \
    && useradd --system --uid 10001 --gid neurelay --no-create-home --shell /usr/sbin/nologin neurelay
COPY --from=build /opt/neurelay /opt/neurelay
ENV PATH=/opt/neurelay/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["neurelay"]
CMD ["gateway", "--config", "/etc/neurelay/gateway.yaml"]
