#!/usr/bin/env bash
# Install Debian's headless-capable `chromium` for the report's browser test (tests/test_html_browser.py).
# Needs root (apt-get). A no-op when /usr/bin/chromium already exists. Exits non-zero with a
# message when it cannot install; the browser test then skips with a reason.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "install-chromium: /usr/bin/chromium already present ($(/usr/bin/chromium --version 2>/dev/null || echo 'version unknown'))"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-chromium: needs root to run apt-get; rerun as root (sudo bash $0) or install Debian's chromium package yourself" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-chromium: apt-get not found: this script supports Debian/Ubuntu only; install chromium by hand" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends chromium >/dev/null; then
  apt-get update -q >/dev/null || true
  if ! apt-get install -y -q --no-install-recommends chromium >/dev/null; then
    echo "install-chromium: 'apt-get install chromium' failed; check the apt sources and network, then rerun" >&2
    exit 1
  fi
fi
if [ ! -x /usr/bin/chromium ]; then
  echo "install-chromium: apt-get finished but /usr/bin/chromium is missing; install the 'chromium' package by hand" >&2
  exit 1
fi
echo "install-chromium: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
