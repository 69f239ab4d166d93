#!/usr/bin/env bash
# Runs `bazel test` offline on this repository (Bazel 4.2.3 from Debian's
# bazel-bootstrap: `apt-get install -y bazel-bootstrap`).
#
#   tools/bazel_test.sh                          # bazel test //...
#   tools/bazel_test.sh //:test_norms            # one test file
#   tools/bazel_test.sh //... --test_arg=--runslow
#
# It fills in the flags that need absolute paths: the local stand-ins for the
# repositories Bazel asks for implicitly (third_party/bazel/), Debian's copy
# of @platforms, and the Python interpreter that has TensorFlow installed
# ($PYTHON, default .venv/bin/python: create it as the README says).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
python=${PYTHON:-$root/.venv/bin/python}
if [[ ! -x "$python" ]]; then
  echo "bazel_test.sh: no Python interpreter at $python; create the venv first (README)" >&2
  exit 1
fi
if ! command -v bazel >/dev/null; then
  echo "bazel_test.sh: bazel not found; apt-get install -y bazel-bootstrap" >&2
  exit 1
fi
platforms=${BAZEL_PLATFORMS_REPO:-/usr/share/bazel/platforms}

flags=(
  "--override_repository=rules_cc=$root/third_party/bazel/rules_cc"
  "--override_repository=rules_java=$root/third_party/bazel/rules_java"
  "--override_repository=remote_coverage_tools=$root/third_party/bazel/remote_coverage_tools"
  "--override_repository=platforms=$platforms"
  "--python_path=$python"
  # With Python toolchains (the default) Bazel 4 ignores --python_path.
  --incompatible_use_python_toolchains=false
)
if [[ $# -eq 0 ]]; then
  set -- //...
fi
exec bazel test "${flags[@]}" "$@"
