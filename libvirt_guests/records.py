"""Plain record classes: the part of the standard library's dataclasses this
package uses (``@dataclass``, ``@dataclass(frozen=True)``, ``field``,
``asdict``, ``replace``, ``fields``), at a fraction of its start-up cost.

Why not dataclasses itself (issue 13): every invocation, a ``stop`` with no
guest at each shutdown included, defines some thirty record classes. The
standard library imports ``inspect`` (and with it ast, dis, tokenize...) and
compiles each class's ``__init__``, ``__repr__`` and ``__eq__`` from source
text, and computes a signature for each class without a docstring: measured
here, about as long as importing libvirt itself. These classes get generic
methods instead, made by closures over the class's field list; an instance
costs a few microseconds more to build, which nothing here notices.

What it does as dataclasses does: fields in annotation order (a base class's
first), defaults and default factories, ``init=False``, ``repr=False``,
``compare=False``; ``__init__`` (with ``__post_init__``), ``__repr__``,
``__eq__`` and ``__match_args__``, unless the class defines its own; frozen
instances refuse assignment (FrozenInstanceError, an AttributeError) and
hash by their compared fields, others are unhashable unless the class
defines ``__hash__``. What it does not: ``order``, ``slots``, ``kw_only``,
``InitVar``, and the check for mutable defaults. ``asdict`` does not copy
values that are not records, lists, tuples or dicts (the package's records
hold strings, numbers, booleans and enums).

``typing.dataclass_transform`` tells type checkers to read these classes as
dataclasses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform, overload

T = TypeVar("T")

_FIELDS = "__record_fields__"


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class FrozenInstanceError(AttributeError):
    """Assignment to a field of a frozen record."""


class Field:
    """One field of a record class (what ``field()`` returns, and ``fields()`` lists)."""

    __slots__ = ("name", "default", "default_factory", "init", "repr", "compare")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING, init: bool = True,
                 repr: bool = True, compare: bool = True) -> None:  # noqa: A002 - dataclasses' name
        if default is not MISSING and default_factory is not MISSING:
            raise ValueError("cannot specify both default and default_factory")
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.compare = compare

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, default={self.default!r}, default_factory={self.default_factory!r})"


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING, init: bool = True,
          repr: bool = True, compare: bool = True) -> Any:  # noqa: A002 - dataclasses' name
    """A field with options, as dataclasses.field."""
    return Field(default, default_factory, init, repr, compare)


def _is_classvar(annotation: object) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _collect(cls: type) -> tuple[Field, ...]:
    """The fields of cls: its bases' (records), then its own annotations'."""
    found: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for f in base.__dict__.get(_FIELDS, ()):
            found[f.name] = f
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if _is_classvar(annotation):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        f.name = name
        found[name] = f
        # As dataclasses: a plain default stays a class attribute, a factory's field has none.
        if isinstance(value, Field):
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
    seen_default = False
    for f in found.values():
        if not f.init:
            continue
        if f.default is not MISSING or f.default_factory is not MISSING:
            seen_default = True
        elif seen_default:
            raise TypeError(f"non-default argument {f.name!r} follows default argument")
    return tuple(found.values())


def _make_init(cls: type, all_fields: tuple[Field, ...]) -> Callable[..., None]:
    params = tuple(f for f in all_fields if f.init)
    names = tuple(f.name for f in params)
    position = {name: i for i, name in enumerate(names)}
    # What a parameter not passed gets: (name, default or MISSING, factory or MISSING), in order.
    fill = tuple((f.name, f.default, f.default_factory) for f in params)
    later = tuple((f.name, f.default, f.default_factory) for f in all_fields
                  if not f.init and (f.default is not MISSING or f.default_factory is not MISSING))
    has_post_init = hasattr(cls, "__post_init__")
    qualname = cls.__qualname__
    count = len(names)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        given = len(args)
        if given > count:
            raise TypeError(f"{qualname}.__init__() takes {count + 1} positional arguments but {given + 1} were given")
        values = self.__dict__  # set directly: past a frozen class's __setattr__, as dataclasses' __init__
        values.update(zip(names, args, strict=False))
        if kwargs:
            for name in kwargs:
                at = position.get(name)
                if at is None:
                    raise TypeError(f"{qualname}.__init__() got an unexpected keyword argument {name!r}")
                if at < given:
                    raise TypeError(f"{qualname}.__init__() got multiple values for argument {name!r}")
            values.update(kwargs)
        if given + len(kwargs) < count:
            for name, default, factory in fill[given:]:
                if name in values:
                    continue
                if default is not MISSING:
                    values[name] = default
                elif factory is not MISSING:
                    values[name] = factory()
                else:
                    raise TypeError(f"{qualname}.__init__() missing 1 required argument: {name!r}")
        for name, default, factory in later:
            values[name] = factory() if factory is not MISSING else default
        if has_post_init:
            self.__post_init__()

    __init__.__qualname__ = f"{qualname}.__init__"
    return __init__


def _make_methods(cls: type, all_fields: tuple[Field, ...], frozen: bool) -> dict[str, Any]:
    shown = tuple(f.name for f in all_fields if f.repr)
    compared = tuple(f.name for f in all_fields if f.compare)
    field_names = frozenset(f.name for f in all_fields)

    def __repr__(self: Any) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"{type(self).__qualname__}({inner})"

    def __eq__(self: Any, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in compared)

    def __hash__(self: Any) -> int:
        return hash(tuple(getattr(self, name) for name in compared))

    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in field_names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        object.__setattr__(self, name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in field_names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        object.__delattr__(self, name)

    methods: dict[str, Any] = {"__repr__": __repr__, "__eq__": __eq__}
    own_hash = cls.__dict__.get("__hash__", MISSING)
    explicit_hash = not (own_hash is MISSING or (own_hash is None and "__eq__" in cls.__dict__))
    if not explicit_hash:
        methods["__hash__"] = __hash__ if frozen else None
    if frozen:
        methods["__setattr__"] = __setattr__
        methods["__delattr__"] = __delattr__
    return methods


def _process(cls: type[T], frozen: bool) -> type[T]:
    all_fields = _collect(cls)
    setattr(cls, _FIELDS, all_fields)
    if "__init__" not in cls.__dict__:
        cls.__init__ = _make_init(cls, all_fields)  # type: ignore[method-assign]
    for name, method in _make_methods(cls, all_fields, frozen).items():
        if name != "__hash__" and name in cls.__dict__:
            continue  # the class's own (its __hash__ is decided by _make_methods)
        if method is not None:
            method.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, method)
    if "__match_args__" not in cls.__dict__:
        cls.__match_args__ = tuple(f.name for f in all_fields if f.init)  # type: ignore[attr-defined,misc]
    return cls


@overload
def dataclass(cls: type[T], /) -> type[T]: ...


@overload
def dataclass(*, frozen: bool = False) -> Callable[[type[T]], type[T]]: ...


@dataclass_transform(field_specifiers=(field, Field))
def dataclass(cls: type[T] | None = None, /, *, frozen: bool = False) -> Any:
    """As dataclasses.dataclass (see the module's docstring for what it leaves out)."""
    if cls is None:
        return lambda klass: _process(klass, frozen)
    return _process(cls, frozen)


def is_record(obj: object) -> bool:
    """True for a record class or instance."""
    return hasattr(obj if isinstance(obj, type) else type(obj), _FIELDS)


def fields(obj: object) -> tuple[Field, ...]:
    """The fields of a record class or instance, as dataclasses.fields."""
    found = getattr(obj if isinstance(obj, type) else type(obj), _FIELDS, None)
    if found is None:
        raise TypeError("must be called with a record class or instance")
    return tuple(found)


def asdict(obj: object) -> dict[str, Any]:
    """A record as a dict, records inside it (also in lists, tuples and dicts) too."""
    if not is_record(obj) or isinstance(obj, type):
        raise TypeError("asdict() should be called on record instances")
    result = _inner(obj)
    assert isinstance(result, dict)
    return result


def _inner(obj: Any) -> Any:
    if is_record(obj) and not isinstance(obj, type):
        return {f.name: _inner(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a named tuple
        return type(obj)(*[_inner(v) for v in obj])
    if isinstance(obj, list | tuple):
        return type(obj)(_inner(v) for v in obj)
    if isinstance(obj, dict):
        return type(obj)((_inner(k), _inner(v)) for k, v in obj.items())
    return obj


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of a record with some fields changed, as dataclasses.replace."""
    for f in fields(obj):
        if not f.init:
            if f.name in changes:
                raise ValueError(f"field {f.name} is declared with init=False, it cannot be specified with replace()")
            continue
        if f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return type(obj)(**changes)
