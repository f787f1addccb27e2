#!/bin/sh
# Container entry point of the apprank images.
#
# prometheus-client's multiprocess mode keeps one file per worker in PROMETHEUS_MULTIPROC_DIR; files
# left by a previous run of the container would be summed into the new run's counters, so the folder is
# emptied before the server starts (the service wipes it too; doing it here also covers other commands).
set -eu

if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
    mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    find "$PROMETHEUS_MULTIPROC_DIR" -mindepth 1 -delete
fi

# No arguments: serve, configured by the environment (see the Dockerfile's ENV block).
if [ "$#" -eq 0 ]; then
    set -- apprank serve \
        --models "${APPRANK_MODELS_DIR}" \
        --host "${APPRANK_HOST}" \
        --port "${APPRANK_PORT}" \
        --workers "${APPRANK_WORKERS}"
fi

exec "$@"
