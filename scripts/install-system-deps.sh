#!/usr/bin/env bash
# Installs the system packages the test suite starts for real: PostgreSQL's server binaries, Redis (shared
# rate-limit counters), Chromium (browser tests, driven by Playwright), and Node.js with npm for the OpenID
# Connect provider (tests/oidc, which needs Node.js 20.18 or later), and curl, which the README's examples use
# (the suite runs them), and Prometheus, which scrapes a real server's /metrics
# (tests/server/test_prometheus.py starts its own; the Debian service is left disabled), and Tesseract OCR with its
# English and Russian data (gallery/tesseract-ocr) and the DejaVu, Liberation and FreeFont fonts its tests render
# text with.
# Does nothing when they are already there; needs root (or sudo) to install.
set -euo pipefail

missing=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null || missing+=(postgresql)
command -v git >/dev/null || missing+=(git)
command -v curl >/dev/null || missing+=(curl)
command -v node >/dev/null || missing+=(nodejs npm)
command -v redis-server >/dev/null || missing+=(redis-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v prometheus >/dev/null || missing+=(prometheus)
if ! command -v tesseract >/dev/null || ! tesseract --list-langs 2>&1 | grep -x rus >/dev/null; then
  missing+=(tesseract-ocr tesseract-ocr-eng tesseract-ocr-rus)
fi
[ -d /usr/share/fonts/truetype/dejavu ] || missing+=(fonts-dejavu-core)
[ -d /usr/share/fonts/truetype/liberation2 ] || missing+=(fonts-liberation2)
[ -d /usr/share/fonts/truetype/freefont ] || missing+=(fonts-freefont-ttf)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "installing system packages: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
  # The tests start their own Prometheus; the package's service would only hold port 9090.
  $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
