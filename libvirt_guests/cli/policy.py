"""The `policy` command: show or set a guest's policy (its metadata)."""

from __future__ import annotations

from typing import Any

from libvirt_guests.cli.commandline import (
    Invocation,
)
from libvirt_guests.config.commands import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from libvirt_guests.config.policy import ATTRIBUTES, effective, read_policy, refusals, write_policy
from libvirt_guests.engine import Context, connect_all
from libvirt_guests.output import dump_json, plain_number, redact, shown, shown_uri


def show_value(value: object) -> str:
    """A policy value for people: yes/no, plain numbers, words, '-' for unset."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return plain_number(value)
    if isinstance(value, tuple | list):
        return " ".join(str(v) for v in value)
    return str(value)


def policy_command(ctx: Context, opts: Invocation, about: dict[str, Any]) -> int:
    args = opts.policy
    assert args is not None
    refused = refusals(ctx.config, args.changes)
    if refused:  # what stop would refuse is not stored
        for line in refused:
            ctx.out.error(line)
        return EXIT_USAGE
    uri = args.uri or (ctx.config.uris[0] if ctx.config.uris else "default")
    hv = connect_all(ctx, [uri], retry_for=0, stdout=not opts.json)[uri]
    if hv is None:
        return EXIT_FAIL
    try:
        guest = hv.lookup(args.guest)
        if guest is None:
            ctx.out.error(f"no guest '{shown(args.guest)}' on {shown_uri(uri)}")
            return EXIT_FAIL
        current = read_policy(guest)
        if args.clear or args.changes:
            texts = {} if args.clear else {**current.texts, **args.changes}
            write_policy(guest, texts)
            current = read_policy(guest)
        eff = effective(ctx.config, current)
        for warning in current.one_line():
            ctx.out.warn(warning)
        if not ctx.config.guest_policy and current.texts:
            ctx.out.warn(f"guest {shown(guest.name)}: GUEST_POLICY=0: its policy metadata is ignored; "
                         "the values below are the host-wide settings")
        values = {a.name: getattr(eff, a.name) for a in ATTRIBUTES}
        values["shutdown_timeout"] = (
            eff.shutdown_timeout if eff.shutdown_timeout is not None else ctx.config.shutdown_timeout
        )
        if opts.json:
            ctx.out.block(dump_json({
                "guest": guest.name, "uuid": guest.uuid, "uri": redact(uri),
                "policy": {k: (list(v) if isinstance(v, tuple) else redact(v) if isinstance(v, str) else v)
                           for k, v in values.items()},
                "sources": eff.sources, "metadata": {k: redact(v) for k, v in current.texts.items()}, **about,
            }))
        else:
            ctx.out.say(f"policy of {shown(guest.name)} ({guest.uuid}) on {shown_uri(uri)}:")
            for name, value in values.items():
                ctx.out.say(f"  {name:<17} {shown_uri(show_value(value)):<24} ({eff.sources[name]})")
        return EXIT_OK
    finally:
        hv.close()
