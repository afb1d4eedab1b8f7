# Weir worker image. Build: docker build -t weir .
# Runs the same command as the README and the tests: `weir worker -l info`.

FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/weir
ENV PATH=/opt/weir/bin:$PATH
COPY pyproject.toml README.md ./
COPY app ./app
COPY agents ./agents
COPY tables ./tables
RUN pip install --no-cache-dir .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 weir && useradd --system --uid 10001 --gid weir --home-dir /data weir \
    && mkdir -p /data && chown weir:weir /data
COPY --from=build /opt/weir /opt/weir
ENV PATH=/opt/weir/bin:$PATH \
    WEIR_DATA_DIR=/data \
    WEIR_WEB_HOST=0.0.0.0 \
    WEIR_WEB_PORT=6066 \
    PYTHONUNBUFFERED=1
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6066
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ.get('WEIR_WEB_PORT', '6066'), timeout=4)"]
ENTRYPOINT ["weir"]
CMD ["worker", "-l", "info"]
