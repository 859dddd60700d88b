"""Whose defaults apply to the variables a configuration leaves unset:
upstream libvirt's or Debian's (ON_BOOT=ignore, ON_SHUTDOWN=shutdown), and
where that choice comes from.

The first that is set wins: the --defaults option, the
LIBVIRT_GUESTS_DEFAULTS environment variable, the choice a distribution
package built into this copy, upstream's. A package records its choice at
build time in libvirt_guests/config/_vendor.py (Debian's debian/rules writes
DEFAULTS = "debian"), so the command gives the same answer whoever runs it:
the unit, the init script or an admin's shell, as the distribution's own
script did."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

from libvirt_guests.config.load import ENV_DEFAULTS, FLAVOURS

UPSTREAM = "upstream"
VENDOR_MODULE = "libvirt_guests.config._vendor"


@dataclass(frozen=True)
class Flavour:
    name: str  # upstream or debian (anything else comes from the environment and is reported as invalid)
    source: str  # '--defaults', 'LIBVIRT_GUESTS_DEFAULTS', 'package' or 'built-in'
    detail: str  # where it comes from, for people

    def describe(self) -> str:
        return f"{self.name} ({self.detail})"


def built_in() -> Flavour:
    """The packager's choice recorded at build time, else upstream's."""
    try:
        vendor = importlib.import_module(VENDOR_MODULE)
    except ImportError:
        return Flavour(UPSTREAM, "built-in", "upstream's, as built from source")
    name = getattr(vendor, "DEFAULTS", UPSTREAM)
    package = getattr(vendor, "PACKAGE", "distribution")
    if name not in FLAVOURS:
        return Flavour(UPSTREAM, "built-in", f"upstream's: the {package} package's choice {name!r} is not known")
    return Flavour(name, "package", f"chosen by the {package} package when it was built")


def resolve(option: str | None, environ: dict[str, str] | None = None) -> Flavour:
    env = os.environ if environ is None else environ
    if option:
        return Flavour(option, "--defaults", "chosen by --defaults")
    if env.get(ENV_DEFAULTS):
        return Flavour(env[ENV_DEFAULTS], ENV_DEFAULTS, f"set by {ENV_DEFAULTS} in the environment")
    return built_in()
