#!/usr/bin/env bash
# Installs everything the build and the tests need, idempotently; fast when done.
#  - a project-local virtualenv (.venv, git-ignored) with torch==2.13.0, whose
#    libtorch tch 0.26 builds and links against (.cargo/config.toml points there);
#  - starts the local PostgreSQL cluster if it is installed but not running
#    (the PostgreSQL tests skip with a printed reason when none is reachable).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="2.13.0"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=.venv
TORCH_DIR="$VENV/lib/python3.11/site-packages/torch"

have_torch() {
  [ -f "$TORCH_DIR/version.py" ] && grep -q "__version__ = '$TORCH_VERSION" "$TORCH_DIR/version.py" \
    && [ -f "$TORCH_DIR/lib/libtorch_cpu.so" ]
}

if ! have_torch; then
  echo "setup: installing torch==$TORCH_VERSION into $VENV (libtorch for tch; about 4.7 GB)" >&2
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
  have_torch || { echo "setup: torch $TORCH_VERSION not found under $TORCH_DIR after install" >&2; exit 1; }
fi

# Python tools used by benchmarks and the CatBoost peer script only.
if [ "${GEPT_SETUP_PEERS:-0}" = 1 ] && ! "$VENV/bin/python" -c "import catboost, numpy, pandas" 2>/dev/null; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check catboost numpy pandas
fi

# PostgreSQL: start the local cluster when it is installed and stopped.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    for v in /etc/postgresql/*; do
      pg_ctlcluster --skip-systemctl-redirect "$(basename "$v")" main start 2>/dev/null || true
    done
  fi
fi
# Prometheus and promtool (tests/suite/prometheus.rs: the alert rules' unit tests
# and a real scrape), from Debian's package. The tests run their own
# Prometheus; a daemon the package would start is not needed.
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's prometheus package (promtool, prometheus)" >&2
    install_prometheus() {
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1
    }
    install_prometheus || { apt-get update -qq >/dev/null 2>&1 && install_prometheus; } \
      || echo "setup: could not install prometheus; its tests print SKIP (and fail under CI)" >&2
  else
    echo "setup: prometheus is missing and this user cannot install it; its tests print SKIP" >&2
  fi
fi
# Chromium and ChromeDriver for the dashboard's browser tests (tests/suite/faces.rs),
# from Debian's packages.
if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium and chromium-driver (browser tests)" >&2
    install_chromium() {
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null 2>&1
    }
    install_chromium || { apt-get update -qq >/dev/null 2>&1 && install_chromium; } \
      || echo "setup: could not install chromium; the browser tests print SKIP (and fail under CI)" >&2
  else
    echo "setup: chromium is missing and this user cannot install it; the browser tests print SKIP" >&2
  fi
fi
exit 0
