#!/bin/sh
# Entrypoint of the parotid-seg images: docker/entrypoint.sh COMMAND [ARGS...]
#
#   serve | worker | listen | segment | models   run `parotid-seg COMMAND ARGS...` after the checks below
#   anything else                               run it as is (e.g. `docker compose run --rm api sh`)
#   (no command)                                 serve
#
# Before serve/worker/listen it checks, so that a misconfigured container fails at once with a clear message:
#   - the job store (PAROTID_JOB_DIR) and, for listen, the spool (PAROTID_LISTENER_SPOOL_DIR) are writable by
#     this uid (a shared volume or NFS export owned by another uid is the usual cause); exit 2 otherwise;
#   - worker with PAROTID_REQUIRE_GPU=1 (set in the GPU image): TensorFlow sees at least one GPU, checked in a
#     separate process so that the worker's parent never imports TensorFlow (not fork-safe); exit 3 otherwise.
# Then it replaces itself with parotid-seg (exec), which receives the signals (docker stop -> SIGTERM).
set -eu

if [ "$#" -eq 0 ]; then
    set -- serve
fi

case "$1" in
    serve | worker | listen | segment | models) ;;
    *) exec "$@" ;;
esac

need_writable() {  # need_writable SETTING DIR
    mkdir -p "$2" 2>/dev/null || true
    if [ ! -d "$2" ] || [ ! -w "$2" ]; then
        echo "error[CONFIG]: $1=$2 is not a writable directory for uid $(id -u) gid $(id -g):" \
             "chown the volume (or NFS export) to this uid, or build the image with --build-arg APP_UID=..." >&2
        exit 2
    fi
}

case "$1" in
    serve | worker | listen)
        need_writable PAROTID_JOB_DIR "${PAROTID_JOB_DIR:-var/jobs}"
        ;;
esac
if [ "$1" = listen ]; then
    need_writable PAROTID_LISTENER_SPOOL_DIR "${PAROTID_LISTENER_SPOOL_DIR:-var/listener}"
fi

if [ "$1" = worker ] && [ "${PAROTID_REQUIRE_GPU:-0}" = 1 ]; then
    if ! python3 -c '
import sys
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
if not gpus:
    sys.exit(1)
print("GPU(s) visible to TensorFlow %s: %s" % (tf.__version__, ", ".join(g.name for g in gpus)), file=sys.stderr)
'; then
        echo "error[NO_GPU]: PAROTID_REQUIRE_GPU=1 but TensorFlow sees no GPU: check the NVIDIA driver and" \
             "container toolkit on the host and the GPU reservation of this service (nvidia-smi inside the" \
             "container must list it); set PAROTID_REQUIRE_GPU=0 to run this worker on the CPU" >&2
        exit 3
    fi
fi

exec parotid-seg "$@"
