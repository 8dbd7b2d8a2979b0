# abproxy: scheduler + Streamlit report in one container.
#   docker build -t abproxy .
#   docker run -p 8501:8501 -v "$PWD/demo:/workspace" abproxy
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ABPROXY_WORKSPACE=/workspace

RUN useradd --create-home --uid 10001 abproxy
WORKDIR /app
COPY pyproject.toml README.md ./
COPY abproxy ./abproxy
# a normal install: migrations and the Streamlit entry ship inside the package
RUN pip install . && rm -rf /app/abproxy && mkdir -p /workspace && chown abproxy:abproxy /workspace

USER abproxy
VOLUME ["/workspace"]
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8501/_stcore/health', timeout=4).read() == b'ok' else 1)"

# Creates the demo workspace on first start if the volume is empty, then serves scheduler + report.
CMD ["sh", "-c", "test -f /workspace/abproxy.yaml || abproxy demo --workspace /workspace; abproxy serve --workspace /workspace --port 8501 --address 0.0.0.0"]
