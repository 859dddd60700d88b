"""A drop-in Python replacement for libvirt's libvirt-guests init script."""

__version__ = "0.1.1"
