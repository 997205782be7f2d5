#!/usr/bin/env bash
# Makes a Prometheus server binary available for the scrape test without installing a system
# service: Debian's package is downloaded and unpacked into a world-readable folder (the server is
# a Go binary with no library to bring along). Prints nothing; exits non-zero if it can't.
set -euo pipefail
target="$1"
if command -v prometheus >/dev/null 2>&1; then exit 0; fi
if [ -x "$target/usr/bin/prometheus" ]; then exit 0; fi
command -v apt-get >/dev/null && command -v dpkg >/dev/null || { echo "no apt-get/dpkg here" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
download() { apt-get download prometheus >/dev/null 2>&1; }
download || { apt-get update -qq >/dev/null 2>&1 && download; }
mkdir -p "$work/root"
for deb in ./*.deb; do dpkg -x "$deb" "$work/root"; done
chmod -R a+rX "$work/root"
mkdir -p "$(dirname "$target")"
rm -rf "$target.partial" && mv "$work/root" "$target.partial" && mv -T "$target.partial" "$target"
