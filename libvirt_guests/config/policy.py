"""Per-guest policy, kept in the domain's own <metadata> so it travels with
the guest, and the effective policy of a guest (guest value over host value).

  <policy xmlns="urn:libvirt-guests:policy:1" on_shutdown="shutdown poweroff"
          shutdown_timeout="120" order="10"/>
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import libvirt

from libvirt_guests.config.load import Config
from libvirt_guests.config.settings import (
    CHAIN_WORDS,
    SettingError,
    parse_chain,
    parse_choice,
    parse_data_uri,
    parse_delay,
    parse_peer_uri,
    parse_seconds,
)
from libvirt_guests.output import shown, shown_error

if TYPE_CHECKING:  # only a type here
    from libvirt_guests.virt.guest import Guest

NAMESPACE = "urn:libvirt-guests:policy:1"
KEY = "guests"


# Sane ranges of the numeric attributes. Metadata is written by whoever may
# edit a guest's XML: a value of thousands of digits must not reach int() or
# time.sleep(), and one guest's typo must not hold a host shutdown for years.
ORDER_LIMIT = 1_000_000
TIMEOUT_LIMIT = 7 * 24 * 3600  # shutdown_timeout, save_timeout: a week
DELAY_LIMIT = 24 * 3600  # start_delay: a day
_MAX_DIGITS = 20


def _parse_order(text: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", text.strip()):
        raise SettingError("expected a whole number")
    return int(text)


def _bounded(parse: Callable[[str], Any], low: int, high: int) -> Callable[[str], Any]:
    """parse, refusing (SettingError) any value outside low..high; the length
    is checked before parsing, so no value can make int() or float() fail."""

    expected = f"expected a number from {int(low)} to {int(high)}"

    def parse_bounded(text: str) -> Any:
        if len(text.strip()) > _MAX_DIGITS:
            raise SettingError(expected)
        value = parse(text)
        if not low <= value <= high:
            raise SettingError(expected)
        return value

    return parse_bounded


SHOWN_LIMIT = 80  # characters of a metadata name or value quoted in a warning
WARNED_UNKNOWN = 3  # unknown attributes named in a guest's warning; the others are counted


def _shown(text: str, limit: int = SHOWN_LIMIT) -> str:
    """A metadata name or value as quoted in a warning: escaped, and cut
    after `limit` characters."""
    if len(text) <= limit:
        return f"'{shown(text)}'"
    return f"'{shown(text[:limit])}'... ({len(text)} characters)"


def _parse_skip(text: str) -> bool:
    if text not in ("yes", "no"):
        raise SettingError("expected yes or no")
    return text == "yes"


@dataclass(frozen=True)
class Attribute:
    name: str
    parse: Callable[[str], Any]
    accepts: str
    doc: str
    host_setting: str | None  # the host-wide variable it overrides


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(name="on_shutdown", parse=parse_chain, accepts=CHAIN_WORDS,
              doc="action chain on host shutdown", host_setting="ON_SHUTDOWN"),
    Attribute(name="on_boot", parse=parse_choice("start", "ignore"), accepts="start or ignore",
              doc="action on host boot", host_setting="ON_BOOT"),
    Attribute(name="order", parse=_bounded(_parse_order, -ORDER_LIMIT, ORDER_LIMIT),
              accepts=f"a whole number, -{ORDER_LIMIT} to {ORDER_LIMIT}",
              doc="start in ascending, stop in descending order groups; guests without an order "
              "start after and stop before all ordered ones", host_setting=None),
    Attribute(name="shutdown_timeout", parse=_bounded(parse_seconds, 0, TIMEOUT_LIMIT),
              accepts=f"seconds, 0 to {TIMEOUT_LIMIT}",
              doc="seconds to wait for this guest to shut down (0: the host's SHUTDOWN_TIMEOUT; at most "
              "POLICY_MAX_SHUTDOWN_TIMEOUT)", host_setting="SHUTDOWN_TIMEOUT"),
    Attribute(name="save_timeout", parse=_bounded(parse_seconds, 0, TIMEOUT_LIMIT),
              accepts=f"seconds, 0 to {TIMEOUT_LIMIT}",
              doc="seconds a managed save of this guest may take (0: the host's SAVE_TIMEOUT; at most "
              "POLICY_MAX_SAVE_TIMEOUT)", host_setting="SAVE_TIMEOUT"),
    Attribute(name="start_delay", parse=_bounded(parse_delay, 0, DELAY_LIMIT), accepts=f"seconds, 0 to {DELAY_LIMIT}",
              doc="seconds to wait after this guest started before the next order group (at most "
              "POLICY_MAX_START_DELAY; all groups together POLICY_MAX_START_DELAY_TOTAL)", host_setting=None),
    Attribute(name="skip", parse=_parse_skip, accepts="yes or no",
              doc="yes: leave this guest alone on stop", host_setting=None),
    Attribute(name="migrate_to", parse=parse_peer_uri, accepts="one libvirt URI",
              doc="the peer host the migrate action moves this guest to: one of MIGRATE_URI and "
              "MIGRATE_PEERS, exactly", host_setting="MIGRATE_URI"),
    Attribute(name="migrate_data_uri", parse=parse_data_uri, accepts="one URI, e.g. tcp://10.0.0.2",
              doc="where this guest's migration stream goes: one of MIGRATE_DATA_URI and "
              "MIGRATE_DATA_URIS, exactly", host_setting="MIGRATE_DATA_URI"),
)
BY_ATTRIBUTE = {a.name: a for a in ATTRIBUTES}


@dataclass
class GuestPolicy:
    """The attributes a guest's metadata sets, already parsed."""

    values: dict[str, Any] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    gone: bool = False  # not read: the guest no longer exists
    name: str = ""  # the guest's, for the warnings effective() adds
    ignored: bool = False  # GUEST_POLICY=0: the metadata was not read

    def warn(self, text: str) -> None:
        if text not in self.warnings:  # effective() may be asked twice about one policy
            self.warnings.append(text)

    def one_line(self) -> list[str]:
        """What is wrong with this guest's policy, as at most one warning line
        per guest and run: the first warning whole, the others after it
        without the repeated `guest NAME: `."""
        if len(self.warnings) <= 1:
            return list(self.warnings)
        prefix = f"guest {shown(self.name)}: "
        rest = [w.removeprefix(prefix) for w in self.warnings[1:]]
        return [" | ".join([self.warnings[0], *rest])]


def parse_policy(xml: str | None, guest_name: str) -> GuestPolicy:
    """Parse the metadata element; a bad value is dropped with a warning."""
    policy = GuestPolicy(name=guest_name)
    if not xml:
        return policy

    try:
        element = ET.fromstring(xml)
    except ET.ParseError as err:
        policy.warnings.append(f"guest {shown(guest_name)}: unreadable policy metadata ({shown_error(err)}); "
                               "using host-wide settings")
        return policy
    unknown: list[str] = []
    for name, text in element.attrib.items():
        attribute = BY_ATTRIBUTE.get(name)
        if attribute is None:
            if len(unknown) < WARNED_UNKNOWN:
                unknown.append(f"{_shown(name)}={_shown(text)}")
            else:
                unknown.append("")  # counted, not shown
            continue
        try:
            policy.values[name] = attribute.parse(text)
            policy.texts[name] = text
        except (ValueError, OverflowError) as err:  # SettingError, or a parser's own error
            # at most one line per known attribute: a handful
            policy.warnings.append(f"guest {shown(guest_name)}: policy {name}={_shown(text)} is not valid "
                                   f"({shown_error(err)}); using the host-wide setting")
    # The unknown ones, however many the metadata carries: one line per guest.
    if unknown:
        named = ", ".join(text for text in unknown if text)
        more = f" and {len(unknown) - WARNED_UNKNOWN} more" if len(unknown) > WARNED_UNKNOWN else ""
        what = "attribute" if len(unknown) == 1 else f"{len(unknown)} attributes"
        policy.warnings.insert(0, f"guest {shown(guest_name)}: unknown policy {what} {named}{more}; ignored")
    return policy


def read_policy(guest: Guest) -> GuestPolicy:
    """The live policy of a running guest, else its persistent one: one call,
    libvirt picks the definition."""
    try:
        xml = guest.metadata(NAMESPACE)
    except Exception as err:  # noqa: BLE001 - a policy must never stop the run
        warning = (f"guest {shown(guest.name)}: cannot read policy metadata ({shown_error(err)}); "
                   "using host-wide settings")
        return GuestPolicy(warnings=[warning], gone=bool(getattr(err, "vanished", False)),  # VirtError.vanished
                           name=guest.name)
    return parse_policy(xml, guest.name)



def policy_xml(texts: dict[str, str]) -> str | None:
    if not texts:
        return None

    element = ET.Element("policy")
    for attribute in ATTRIBUTES:
        if attribute.name in texts:
            element.set(attribute.name, texts[attribute.name])
    return ET.tostring(element, encoding="unicode")


def write_policy(guest: Guest, texts: dict[str, str]) -> None:
    """Store (or with empty texts, remove) the policy: persistent and, if running, live."""
    flags = 0
    if guest.is_persistent():
        flags |= libvirt.VIR_DOMAIN_AFFECT_CONFIG
    if guest.is_active():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    guest.set_metadata(policy_xml(texts), KEY, NAMESPACE, flags)


@dataclass(frozen=True)
class Effective:
    """A guest's effective policy and the source of each value."""

    on_shutdown: tuple[str, ...]
    on_boot: str
    order: int | None
    shutdown_timeout: int | None  # None: the host-wide rule (per URI when parallel)
    save_timeout: int
    start_delay: float
    skip: bool
    sources: dict[str, str]
    migrate_to: str = ""  # empty: no peer for this guest; else always a string of the host configuration
    migrate_data_uri: str = ""  # likewise
    migrate_refused: str = ""  # why the guest's own migrate_to was refused (then migrate_to is empty)


def _allowed(asked: str, allowed: tuple[str, ...]) -> str | None:
    """The host configuration's own string equal to ``asked``, or None: a
    guest's text only selects, it is never the one used."""
    return next((uri for uri in allowed if uri == asked), None)


def _ceiling(name: str, host_value: float, ceiling: int | None) -> float | None:
    """The most a guest may ask for (None: no ceiling): POLICY_MAX_... when
    set (0: none), else the host's own value. A host timeout of 0 means no
    limit, so no ceiling; a START_DELAY of 0 means no delay, so a ceiling of 0."""
    if ceiling is not None:
        return ceiling or None
    if name == "start_delay":
        return host_value
    return host_value or None


def bounded_values(config: Config, policy: GuestPolicy) -> dict[str, Any]:
    """The guest's values as the host allows them: peers and data URIs chosen
    among the host's, 0 meaning the host's value, ceilings applied. Each
    refusal or cut is a warning on the policy."""
    if policy.ignored or not config.guest_policy:
        return {}
    values = dict(policy.values)
    who = f"guest {shown(policy.name)}"
    for name, host_value, ceiling, variable in (
        ("shutdown_timeout", config.shutdown_timeout, config.policy_max_shutdown_timeout,
         "POLICY_MAX_SHUTDOWN_TIMEOUT"),
        ("save_timeout", config.save_timeout, config.policy_max_save_timeout, "POLICY_MAX_SAVE_TIMEOUT"),
        ("start_delay", config.start_delay, config.policy_max_start_delay, "POLICY_MAX_START_DELAY"),
    ):
        if name not in values:
            continue
        if not values[name] and name != "start_delay":
            del values[name]  # 0 from a guest: the host's value, never "no limit"
            continue
        limit = _ceiling(name, host_value, ceiling)
        if limit is not None and values[name] > limit:
            policy.warn(f"{who}: policy {name}={_shown(policy.texts.get(name, ''))} is above the host's ceiling "
                        f"({variable}: {_number(limit)} s); using {_number(limit)}")
            values[name] = limit
    # Compared as the metadata writes them (not stripped): equal to a host string, byte for byte, or refused.
    asked = policy.texts.get("migrate_to", "") if values.pop("migrate_to", "") else ""
    if asked:
        chosen = _allowed(asked, config.allowed_peers())
        if chosen is None:
            policy.warn(f"{who}: policy migrate_to={_shown(asked)} is not one of the host's peers (MIGRATE_URI, "
                        "MIGRATE_PEERS); refused, never opened: the guest takes the rest of its chain")
            values["migrate_refused"] = "its policy names a peer the host does not list in MIGRATE_PEERS"
        else:
            values["migrate_to"] = chosen
    asked = policy.texts.get("migrate_data_uri", "") if values.pop("migrate_data_uri", "") else ""
    if asked:
        chosen = _allowed(asked, config.allowed_data_uris())
        if chosen is None:
            policy.warn(f"{who}: policy migrate_data_uri={_shown(asked)} is not one of the host's data URIs "
                        "(MIGRATE_DATA_URI, MIGRATE_DATA_URIS); refused: using MIGRATE_DATA_URI")
        else:
            values["migrate_data_uri"] = chosen
    return values


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def effective(config: Config, policy: GuestPolicy, forced_chain: tuple[str, ...] | None = None) -> Effective:
    """Guest values override host values for that guest only, within the
    host's bounds (bounded_values; its warnings go to policy.warnings)."""
    values = bounded_values(config, policy)
    sources: dict[str, str] = {}
    for attribute in ATTRIBUTES:
        if attribute.name in values:
            sources[attribute.name] = "guest metadata"
            if values[attribute.name] != policy.values.get(attribute.name):
                sources[attribute.name] = "guest metadata, cut to the host's ceiling"
        elif attribute.host_setting:
            host_source = config.sources.get(attribute.host_setting, "default")
            sources[attribute.name] = f"{attribute.host_setting} ({host_source})"
        else:
            sources[attribute.name] = "default"
    chain = values.get("on_shutdown", config.on_shutdown)
    if values.get("migrate_refused"):
        sources["migrate_to"] = "guest metadata, refused"
    if forced_chain is not None:
        chain = forced_chain
        sources["on_shutdown"] = "the shutdown command"
    return Effective(
        on_shutdown=chain,
        on_boot=values.get("on_boot", config.on_boot),
        order=values.get("order"),
        shutdown_timeout=values.get("shutdown_timeout"),
        save_timeout=values.get("save_timeout", config.save_timeout),
        start_delay=values.get("start_delay", 0.0),
        skip=values.get("skip", False),
        sources=sources,
        migrate_to="" if "migrate_refused" in values else (values.get("migrate_to") or config.migrate_uri),
        migrate_data_uri=values.get("migrate_data_uri") or config.migrate_data_uri,
        migrate_refused=values.get("migrate_refused", ""),
    )


def start_delay_total(config: Config) -> float | None:
    """How long, per URI, start may wait for guests' own start_delay, all
    order groups together (None: no bound): POLICY_MAX_START_DELAY_TOTAL
    (0: none), else the most one guest may ask for (a day when that has no ceiling)."""
    if config.policy_max_start_delay_total is not None:
        return config.policy_max_start_delay_total or None
    return _ceiling("start_delay", config.start_delay, config.policy_max_start_delay) or DELAY_LIMIT


def refusals(config: Config, changes: dict[str, str]) -> list[str]:
    """What the policy command must not store: the values stop would refuse
    (a peer or data URI the host configuration does not list)."""
    lines = []
    asked = changes.get("migrate_to", "")
    if asked and _allowed(asked, config.allowed_peers()) is None:
        lines.append(f"--migrate-to={_shown(asked)} is not one of the host's peers (MIGRATE_URI, MIGRATE_PEERS: "
                     f"{' '.join(config.allowed_peers()) or 'none'}); stop would refuse it")
    asked = changes.get("migrate_data_uri", "")
    if asked and _allowed(asked, config.allowed_data_uris()) is None:
        lines.append(f"--migrate-data-uri={_shown(asked)} is not one of the host's data URIs (MIGRATE_DATA_URI, "
                     f"MIGRATE_DATA_URIS: {' '.join(config.allowed_data_uris()) or 'none'}); stop would refuse it")
    return lines


def order_groups(items: list[Any], order_of: Callable[[Any], int | None], descending: bool) -> list[list[Any]]:
    """Split into order groups. Ascending (start): ordered groups first,
    unordered last; descending (stop): unordered first, then ordered groups
    from the highest order down. List order is kept inside a group."""
    ordered: dict[int, list[Any]] = {}
    unordered: list[Any] = []
    for item in items:
        order = order_of(item)
        if order is None:
            unordered.append(item)
        else:
            ordered.setdefault(order, []).append(item)
    groups = [ordered[k] for k in sorted(ordered, reverse=descending)]
    if unordered:
        groups = [unordered, *groups] if descending else [*groups, unordered]
    return groups


def policy_of(config: Config, guest: Guest) -> GuestPolicy:
    """The policy stop and start decide by: the guest's own (read_policy),
    or with GUEST_POLICY=0 none, its metadata not even read."""
    if not config.guest_policy:
        return GuestPolicy(name=guest.name, ignored=True)
    return read_policy(guest)
