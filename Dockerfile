# CPU image of the backend. TensorFlow does not survive fork, so gunicorn runs
# without --preload: each worker loads the model itself.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    BENTOML_DO_NOT_TRACK=True \
    TF_CPP_MIN_LOG_LEVEL=2 \
    BENTOML_HOME=/data/bentoml \
    MODEL_DIR=/data/backend \
    PORT=9090 \
    WORKERS=1 \
    THREADS=8 \
    TIMEOUT=120

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

RUN useradd --create-home --uid 1000 backend \
    && mkdir -p /data/bentoml /data/backend \
    && chown -R backend /data
COPY --chown=backend . .
USER backend

EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=3s --start-period=60s \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['PORT'], timeout=2)"

CMD python -m backend ensure-model \
    && exec gunicorn --bind ":$PORT" --workers "$WORKERS" --threads "$THREADS" \
       --timeout "$TIMEOUT" _wsgi:app
