#!/usr/bin/env bash
# Build a local stand-in for the official python image and import it into Docker.
#
# These machines reach Debian's mirror and PyPI but no image registry, so the Dockerfile is built against
# Debian bookworm made with debootstrap: python3 with venv and pip, the machine's CA bundle (the package
# registries are reached through it) and no EXTERNALLY-MANAGED marker, like the official image.
# Usage: .ci/base-image.sh [IMAGE]   (default flask-api-base:bookworm; skipped when the image exists)
set -euo pipefail

image="${1:-${BASE_IMAGE:-flask-api-base:bookworm}}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if docker image inspect "$image" >/dev/null 2>&1; then
    echo "base-image: $image already present"
    exit 0
fi

rootfs="$(mktemp -d /tmp/flask-api-base.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

echo "base-image: debootstrap bookworm into $rootfs"
debootstrap --variant=minbase \
    --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1 || { tail -n 40 "$rootfs.log"; exit 1; }
rm -f "$rootfs.log"

cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
# pip in a virtualenv uses its own CA list unless told otherwise; the official image needs no such file.
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$rootfs/etc/pip.conf"
# What debootstrap leaves behind and an image does not need.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*

tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$image" >/dev/null
echo "base-image: imported $image ($(docker image inspect --format '{{.Size}}' "$image") bytes)"
