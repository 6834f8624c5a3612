# One image for the operator and the data plane (`tollway operator`, `tollway run`) and the mock LLM.
# Multi-stage: wheels are built in a throw-away stage; the final stage has no compilers and runs as non-root.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY dataplane ./dataplane
COPY operator ./operator
COPY cli ./cli
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && groupadd --gid 10001 tollway && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin tollway
USER 10001:10001
EXPOSE 8080 9464
ENTRYPOINT ["tollway"]
CMD ["run", "--help"]
