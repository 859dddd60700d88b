#!/usr/bin/env bash
# Install the system packages the whole test suite needs (Debian 12, as root):
# the real-libvirt test bed, the systemd container tests (debootstrap,
# systemd-nspawn: they boot a Debian 12 and a Debian 13 root) and the
# packaging tests (packaging/ci-packages.txt).
#
# Idempotent: when every package is already installed it does nothing.
# It installs no Python packages (the project's own install does that) and
# starts no daemons (tests/testbed/daemons.py does that on demand).
set -euo pipefail

PACKAGES=(
    libvirt-daemon-system
    libvirt-clients
    qemu-system-x86
    qemu-utils
    libvirt-dev
    pkg-config
    gcc
    python3-dev
    busybox-static
    # tests/systemd: Debian 12 and 13 roots booted with systemd-nspawn
    debootstrap
    debian-archive-keyring
    systemd-container
    util-linux
    # issue 22's UPS case: NUT's upsd and dummy-ups driver, run by the tests on
    # a private port and configuration directory (tests/nut.py); the package
    # starts nothing here (nut.conf's MODE=none, policy-rc.d below)
    nut-server
)
# Debian 12's own packages bootstrap trixie from these versions on (Debian
# 12.11's point release): debootstrap's trixie script without usr-is-merged,
# and the archive keyring with the trixie keys.  An older installed copy is
# upgraded (apt-get install upgrades an installed package to its candidate).
MINIMUM=(
    "debootstrap 1.0.128+nmu2+deb12u2"
    "debian-archive-keyring 2023.3+deb12u2"
)
# The packaging tests' packages (dpkg-buildpackage, rpmbuild, ...).
ci_packages="$(dirname "$0")/../../packaging/ci-packages.txt"
if [[ -r ${ci_packages} ]]; then
    while read -r pkg; do
        [[ -n ${pkg} && ${pkg} != \#* ]] && PACKAGES+=("${pkg}")
    done < "${ci_packages}"
fi

if [[ ${EUID} -ne 0 ]]; then
    echo "setup.sh: must run as root" >&2
    exit 1
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "${pkg}" 2>/dev/null || true)
    if [[ ${status} != installed ]]; then
        missing+=("${pkg}")
    fi
done
for entry in "${MINIMUM[@]}"; do
    read -r pkg minimum <<< "${entry}"
    version=$(dpkg-query -W -f='${Version}' "${pkg}" 2>/dev/null || true)
    if [[ -n ${version} ]] && ! dpkg --compare-versions "${version}" ge "${minimum}"; then
        missing+=("${pkg}")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "setup.sh: all test-bed packages already installed"
    exit 0
fi

echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive

# Keep maintainer scripts from starting libvirtd/virtlogd (invoke-rc.d honours
# policy-rc.d exit code 101); only installed if no policy exists yet.
policy=/usr/sbin/policy-rc.d
if [[ ! -e ${policy} ]]; then
    printf '#!/bin/sh\nexit 101\n' > "${policy}"
    chmod 755 "${policy}"
    trap 'rm -f "${policy}"' EXIT
fi

apt-get update
# Install the full list so versions stay consistent; apt skips what is present.
apt-get install -y --no-install-recommends "${PACKAGES[@]}"
