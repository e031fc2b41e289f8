#!/bin/sh
# Lifecycle install step of com.edgeinference.Agent: a virtual environment in the
# component's work folder holding the agent wheel (its device install: no extras) and
# the platform's DLR.
#
#   install-agent.sh ARTIFACTS_DIR WORK_DIR
#
# Idempotent: a venv that already holds this agent version is kept, so a nucleus
# restart or a configuration-only deployment does not reinstall.
set -eu
artifacts=$1
work=$2
venv="$work/venv"
wheel=$(ls "$artifacts"/edge_inference_agent-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
  echo "install-agent: no edge_inference_agent wheel in $artifacts" >&2
  exit 1
fi
version=$(basename "$wheel" | cut -d- -f2)
if [ -x "$venv/bin/python" ] && "$venv/bin/python" - "$version" <<'PY'
import sys
try:
    import agent
except ImportError:
    sys.exit(1)
sys.exit(0 if agent.__version__ == sys.argv[1] else 1)
PY
then
  echo "install-agent: agent $version is already installed in $venv"
  exit 0
fi
python=${EDGE_AGENT_PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "install-agent: $python is older than 3.10; install a newer Python and set" \
       "EDGE_AGENT_PYTHON in the recipe's Setenv (JetPack 4.6 ships 3.6)" >&2
  exit 1
fi
rm -rf "$venv"
if [ -f /etc/nv_tegra_release ]; then
  # Jetson: reuse JetPack's system packages (numpy against the board's BLAS, the DLR
  # that JetPack or variant.DLR installed): the venv sees the system site-packages.
  "$python" -m venv --system-site-packages "$venv"
else
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# The wheel alone, no extras: the device set of the agent's dependencies (the operator
# tools, the controller's charts and the model builder are extras a device never needs).
# The wheel's markers pick the platform's DLR: dlr==1.6.0 (the last PyPI release with
# a native libdlr.so) on x86_64; on aarch64 / armv7l libdlr.so comes from variant.DLR
# (a component dependency) or JetPack, and the agent finds it without importing dlr.
"$venv/bin/python" -m pip install --quiet "$wheel"
echo "install-agent: agent $version installed in $venv"
