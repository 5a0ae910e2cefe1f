#!/bin/bash
# Entry point of the CSGM job image: CANN's environment, then the command (python3 -m launcher ...).
#
# Huawei's container start scripts (MindX DL train_start.sh, ModelZoo env.sh) source the toolkit's and
# the TF plugin's set_env.sh before python: they put CANN's libraries on LD_LIBRARY_PATH, the adapter
# (npu_device) and TBE on PYTHONPATH, and set ASCEND_OPP_PATH; without them `import npu_device` fails.
# set_env.sh prepends to PYTHONPATH, so the image's own PYTHONPATH (the project) is kept.
#
# ASCEND_HOME (default /usr/local/Ascend) locates the install. CSGM_SKIP_CANN_ENV=1 runs without it
# (CPU-only use of the image); otherwise a missing set_env.sh is an error (exit 2), not a late
# "No module named npu_device" on every rank.
set -e
ascend_home="${ASCEND_HOME:-/usr/local/Ascend}"
if [ "${CSGM_SKIP_CANN_ENV:-0}" != "1" ]; then
    for script in "${ascend_home}/ascend-toolkit/set_env.sh" "${ascend_home}/tfplugin/set_env.sh"; do
        if [ ! -f "$script" ]; then
            echo "entrypoint: $script not found: this image needs CANN's toolkit and TensorFlow plugin" \
                 "(see k8s/image/Dockerfile), or set CSGM_SKIP_CANN_ENV=1 for CPU-only use" >&2
            exit 2
        fi
        # shellcheck disable=SC1090
        source "$script"
    done
    # The driver's libraries come from the host (mounted by the Ascend docker runtime / device plugin).
    export LD_LIBRARY_PATH="${ascend_home}/driver/lib64/common:${ascend_home}/driver/lib64/driver${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
case ":${PYTHONPATH}:" in
    *":${CSGM_HOME:-/opt/csgm}:"*) ;;
    *) export PYTHONPATH="${CSGM_HOME:-/opt/csgm}${PYTHONPATH:+:$PYTHONPATH}" ;;
esac
exec "$@"
