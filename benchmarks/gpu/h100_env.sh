# Source this on the H100 test machine (see ../../DEVELOPERS.md, "GPU captures"): wheels the image lacks,
# the nvtx 0.2.11 wheel, the importer's shared libraries and Nsight Compute's bundled nsys.
# Expects the carried folders .device-kit/ (nsys-libs, wheels) and .whl/ (pure-Python CLI deps).
set -e
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  .device-kit/wheels/*.whl .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD/src
export LD_LIBRARY_PATH=$PWD/.device-kit/nsys-libs:${LD_LIBRARY_PATH:-}
NSYS=$(ls -d /opt/nvidia/nsight-compute/*/host/target-linux-x64/nsys 2>/dev/null | tail -1)
export NSYS
export PYTHONUNBUFFERED=1
set +e
