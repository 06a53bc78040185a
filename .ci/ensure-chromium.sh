#!/usr/bin/env bash
# Make sure Debian's chromium is at /usr/bin/chromium for the dashboard's browser
# tests (Playwright drives it; no browser is downloaded). Installs the `chromium`
# package with apt-get when it is missing; exits 0 either way, so that a machine
# where it cannot be installed still runs the rest of the suite (those tests then
# skip, saying why).
set -uo pipefail
browser=/usr/bin/chromium

if [ -x "$browser" ]; then exit 0; fi

echo "chromium not found: installing Debian's chromium package"
sudo_cmd=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo_cmd="sudo"; else
    echo "chromium: not root and no sudo; the browser tests will be skipped" >&2
    exit 0
  fi
fi
if ! $sudo_cmd apt-get update -qq \
   || ! DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends \
        chromium fonts-dejavu-core >/dev/null; then
  echo "chromium: apt-get could not install it; the browser tests will be skipped" >&2
  exit 0
fi
"$browser" --version
