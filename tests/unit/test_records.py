"""records.py, the package's stand-in for the standard library's dataclasses
(issue 13: dataclasses imports inspect and compiles methods from source for
each class at every start). Each behaviour the package relies on, checked
against what dataclasses itself does with the same class."""

from __future__ import annotations

import dataclasses
import re
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from libvirt_guests import records
from libvirt_guests.records import FrozenInstanceError, asdict, dataclass, field, fields, replace

PACKAGE = Path(records.__file__).parent


def _pair(frozen: bool = False) -> tuple[type, type]:
    """The same class, made by records and by dataclasses."""

    def body() -> dict[str, Any]:
        return {
            "__annotations__": {"name": "str", "count": "int", "tags": "list[str]", "note": "str",
                                "cache": "dict[str, int]", "kind": ClassVar[str]},
            "count": 0,
            "kind": "class-level",
        }

    made = []
    for make, fld in ((dataclass, field), (dataclasses.dataclass, dataclasses.field)):
        namespace = body()
        namespace["tags"] = fld(default_factory=list)
        namespace["note"] = fld(default="", compare=False, repr=False)
        namespace["cache"] = fld(default_factory=dict, init=False, repr=False, compare=False)
        cls = type("Thing", (), namespace)
        made.append(make(frozen=frozen)(cls))
    return made[0], made[1]


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("a",), {}),
    (("a", 2), {}),
    (("a", 2, ["x"]), {}),
    (("a",), {"note": "n", "tags": ["y"]}),
    ((), {"name": "b", "count": 3}),
    ((), {}),  # missing name
    (("a", 1, [], "n", "extra"), {}),  # too many
    (("a",), {"name": "b"}),  # twice
    (("a",), {"nope": 1}),  # unknown
    (("a",), {"cache": {}}),  # init=False
]


@pytest.mark.parametrize("frozen", [False, True])
@pytest.mark.parametrize(("args", "kwargs"), CALLS)
def test_init_accepts_and_refuses_what_dataclasses_does(frozen: bool, args: tuple[Any, ...],
                                                        kwargs: dict[str, Any]) -> None:
    ours, theirs = _pair(frozen)

    def outcome(cls: type) -> object:
        try:
            obj = cls(*args, **kwargs)
        except TypeError:
            return TypeError
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(theirs)}

    assert outcome(ours) == outcome(theirs)


def test_repr_eq_and_defaults_as_dataclasses() -> None:
    ours, theirs = _pair()
    a, b = ours("a", 2, ["x"], "note"), theirs("a", 2, ["x"], "note")
    assert repr(a).replace("Thing", "") == repr(b).replace("Thing", "")
    assert repr(a) == "Thing(name='a', count=2, tags=['x'])"
    assert a == ours("a", 2, ["x"], "other note")  # note: compare=False
    assert a != ours("a", 3, ["x"])
    assert a != b  # another class: not equal (NotImplemented both ways)
    assert ours("a").tags is not ours("a").tags  # a factory per instance
    assert ours("a").cache == {} and ours("a").cache is not ours("a").cache
    assert ours.count == theirs.count == 0  # a plain default stays on the class
    assert not hasattr(ours, "tags") and not hasattr(theirs, "tags")  # a factory's field does not
    assert ours.kind == "class-level" and "kind" not in {f.name for f in fields(ours)}  # ClassVar: no field
    assert ours.__match_args__ == theirs.__match_args__ == ("name", "count", "tags", "note")


def test_mutable_records_are_unhashable_and_assignable() -> None:
    ours, _ = _pair()
    thing = ours("a")
    thing.count = 5
    assert thing.count == 5
    with pytest.raises(TypeError):
        hash(thing)


def test_frozen_records_refuse_assignment_and_hash_by_compared_fields() -> None:
    ours, theirs = _pair(frozen=True)
    thing = ours("a", 1, ("t",))
    with pytest.raises(FrozenInstanceError):
        thing.count = 2
    with pytest.raises(AttributeError):  # FrozenInstanceError is one, as dataclasses'
        del thing.name
    assert hash(thing) == hash(ours("a", 1, ("t",), "another note"))
    assert thing == ours("a", 1, ("t",), "another note")
    assert hash(ours("a", 1, ("t",))) == hash(theirs("a", 1, ("t",)))  # the same tuple is hashed


def test_a_class_keeps_its_own_methods() -> None:
    @dataclass
    class Own:
        x: int

        def __repr__(self) -> str:
            return "mine"

        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = object.__hash__

    assert repr(Own(1)) == "mine"
    assert Own(1) == 5
    assert isinstance(hash(Own(1)), int)


def test_post_init_runs() -> None:
    @dataclass
    class Post:
        x: int
        doubled: int = field(default=0, init=False)

        def __post_init__(self) -> None:
            self.doubled = 2 * self.x

    assert Post(4).doubled == 8


def test_a_field_without_default_after_one_with_is_refused() -> None:
    with pytest.raises(TypeError, match="non-default argument 'y' follows default argument"):
        @dataclass
        class Bad:
            x: int = 0
            y: int  # type: ignore[misc]


def test_asdict_goes_into_records_lists_tuples_and_dicts() -> None:
    @dataclass
    class Inner:
        a: int

    @dataclass
    class Outer:
        inner: Inner
        items: list[Inner]
        pair: tuple[Inner, int]
        by_name: dict[str, Inner]
        lock: Any = field(default_factory=threading.Lock, repr=False)

    outer = Outer(Inner(1), [Inner(2)], (Inner(3), 4), {"x": Inner(5)}, None)
    assert asdict(outer) == {"inner": {"a": 1}, "items": [{"a": 2}], "pair": ({"a": 3}, 4),
                             "by_name": {"x": {"a": 5}}, "lock": None}
    with pytest.raises(TypeError):
        asdict(Inner)
    with pytest.raises(TypeError):
        asdict({"a": 1})


def test_replace_makes_a_new_record_with_changes() -> None:
    ours, _ = _pair()
    thing = ours("a", 1, ["t"], "n")
    thing.cache["k"] = 1
    other = replace(thing, count=2)
    assert (other.name, other.count, other.tags, other.note) == ("a", 2, ["t"], "n")
    assert other.cache == {}  # init=False: made afresh, as dataclasses.replace
    assert thing.count == 1
    with pytest.raises(ValueError):
        replace(thing, cache={})
    with pytest.raises(TypeError):
        replace(thing, nope=1)


def test_fields_of_a_class_and_of_an_instance() -> None:
    ours, theirs = _pair()
    assert [f.name for f in fields(ours)] == [f.name for f in dataclasses.fields(theirs)]
    assert [f.name for f in fields(ours("a"))] == ["name", "count", "tags", "note", "cache"]
    with pytest.raises(TypeError):
        fields(object())


def test_inherited_fields_come_first() -> None:
    @dataclass
    class Base:
        a: int

    @dataclass
    class Child(Base):
        b: int = 2

    assert [f.name for f in fields(Child)] == ["a", "b"]
    assert Child(1) == Child(1, 2) and repr(Child(1)) == "test_inherited_fields_come_first.<locals>.Child(a=1, b=2)"


def test_the_package_uses_records_not_dataclasses() -> None:
    """Any module of the package importing the standard library's dataclasses
    brings its start-up cost back to every command that imports that module."""
    offenders = [path.name for path in sorted(PACKAGE.glob("*.py"))
                 if re.search(r"^\s*(import dataclasses|from dataclasses import)", path.read_text(), re.M)]
    assert offenders == []


def test_record_classes_of_the_package_build_as_before() -> None:
    """A few of the package's own records, built as the code builds them."""
    from libvirt_guests.config.load import Paths
    from libvirt_guests.engine import Context, Tally
    from libvirt_guests.output import Output
    from libvirt_guests.state.journal import GuestRecord

    record = GuestRecord("test:///default", "u-1", "g")
    assert asdict(record)["outcome"] == "pending" and asdict(record)["autostart_here"] is None
    assert GuestRecord(**asdict(record)) == record
    with pytest.raises(TypeError):
        GuestRecord(**{**asdict(record), "unknown": 1})  # a journal from the future: refused, as before
    paths = Paths.resolve(config="/nonexistent", environ={})
    with pytest.raises(FrozenInstanceError):
        paths.config = None  # type: ignore[misc]
    ctx = Context(None, paths, Output())  # type: ignore[arg-type]
    quiet = replace(ctx, out=Output())
    assert quiet.interrupt is ctx.interrupt and quiet.paths is paths and quiet.out is not ctx.out
    assert Tally().counts == {}


def test_an_init_false_field_without_default_stays_unset() -> None:
    @dataclass
    class Late:
        x: int
        y: int = field(init=False)

    @dataclasses.dataclass
    class LateToo:
        x: int
        y: int = dataclasses.field(init=False)

    assert not hasattr(Late(1), "y") and not hasattr(LateToo(1), "y")
