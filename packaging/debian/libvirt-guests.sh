#!/bin/sh
# Installed by libvirt-guests-python in place of libvirt's script, which
# dpkg-divert moved to /usr/lib/libvirt/libvirt-guests.sh.distrib: callers of
# this path (libvirt-guests.service, /etc/init.d/libvirt-guests) run the
# Python libvirt-guests with Debian's defaults for unset variables.
LIBVIRT_GUESTS_DEFAULTS=${LIBVIRT_GUESTS_DEFAULTS:-debian}
LIBVIRT_GUESTS_PROGRAM_NAME=$0
export LIBVIRT_GUESTS_DEFAULTS LIBVIRT_GUESTS_PROGRAM_NAME
exec /usr/bin/libvirt-guests "$@"
