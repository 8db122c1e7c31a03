#!/usr/bin/env bash
# apt-ensure.sh COMMAND PACKAGE: install a Debian package unless COMMAND is already on PATH.
# Used by the Makefile for system tools the Python packages cannot bring (sox for the
# benchmarks; chromium for the browser tests later). Runs apt-get as root or via sudo.
set -eu
cmd=$1 pkg=$2
command -v "$cmd" >/dev/null 2>&1 && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: '$cmd' is missing and there is no apt-get here; install the package '$pkg' yourself." >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing Debian package '$pkg' (for '$cmd')..."
# apt-get update only when the package is unknown to the local lists.
apt-cache show "$pkg" >/dev/null 2>&1 || $sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$pkg" >/dev/null
command -v "$cmd" >/dev/null 2>&1 || { echo "error: installed '$pkg' but '$cmd' is still not on PATH" >&2; exit 1; }
