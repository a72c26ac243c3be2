#!/usr/bin/env bash
# Installs the Debian packages the test suite needs, once. Idempotent and quiet when present.
set -euo pipefail
need=()
# zsh, fish, tmux: the shell completion tests (tests/unit/test_completion.py) run the real shells.
# buildah, mmdebstrap: the operator image is built from the Dockerfile without Docker
# (tools/image.py, tests/packaging/test_image_build.py).
for pkg in prometheus openssl zsh fish tmux buildah mmdebstrap; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if ((${#need[@]})); then
  echo "installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
