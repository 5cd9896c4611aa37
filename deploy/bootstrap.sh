#!/usr/bin/env bash
# Installs what kiroku needs on a Debian/Ubuntu machine: the system packages
# (tesseract with Japanese models, Japanese fonts, poppler) and a virtualenv
# holding the project. Safe to run again: it only installs what is missing.
set -euo pipefail
VENV=${1:-.venv}
APT_PACKAGES=(tesseract-ocr tesseract-ocr-jpn tesseract-ocr-jpn-vert tesseract-ocr-osd
              fonts-ipafont-gothic fonts-ipafont-mincho poppler-utils python3-venv
              postgresql chromium chromium-driver ghostscript)  # PostgreSQL: catalog tests, bench/scale_out.py; Chromium: the UI test; ghostscript: OCRmyPDF in bench/throughput.py

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "kiroku: installing system packages: ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "kiroku: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[dev]"
echo "kiroku: installed into $VENV"
