"""Access to libvirt through libvirt-python: connections (hypervisor), guests, waits, errors, migration primitives."""
