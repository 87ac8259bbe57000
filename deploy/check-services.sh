#!/bin/sh
# Before the tests run: the programs they start themselves must be on this machine.
# Installs what is missing when it can (Debian/Ubuntu, as root); otherwise says what to install and stops.
missing=""
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$missing mosquitto"
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"  # the web UI tests drive it
command -v mosquitto_sub >/dev/null 2>&1 || missing="$missing mosquitto-clients"  # the compose health check, tested
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages the tests need:$missing"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null && exit 0
  echo "apt-get could not install:$missing" >&2
fi
echo "the tests need these programs, which are not installed:$missing" >&2
echo "  Debian/Ubuntu: sudo apt-get install$missing" >&2
echo "  macOS (Homebrew): brew install$missing" >&2
exit 1
