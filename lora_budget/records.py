"""Record classes: the part of :mod:`dataclasses` this package uses, with its methods built on first use.

``@dataclass(frozen=True, slots=True, kw_only=True)`` and friends behave as the standard library's:
the same ``__init__`` (defaults, ``default_factory``, ``init=False`` fields, ``__post_init__``), the
same ``__repr__``, ``__eq__`` and ``__hash__`` (fields with ``compare`` / ``hash`` / ``repr`` set as
in ``field``), frozen instances that raise :class:`FrozenInstanceError` on assignment, ``__slots__``,
pickling and copying of frozen slotted instances; and ``fields``, ``replace``, ``asdict``. A frozen
record refuses assignment with ``dataclasses.FrozenInstanceError`` (imported then).

Why not the standard library's: `lora-budget plan` has a cold-start target (<= 2.5 x ``python -c
pass``, issue 15). CPython 3.11's ``@dataclass`` compiles each class's ``__init__``, ``__repr__``,
``__eq__``, ``__hash__``, ``__setattr__`` and ``__delattr__`` with ``exec`` when the class is
defined (171 compiles for the 31 classes a plan imports, measured at about 45 % of the plan's time in
its process), and importing :mod:`dataclasses` imports :mod:`inspect` (``ast``, ``dis``, ``enum``,
``re``, ``tokenize``). Here a class's methods run interpreted from its field list for their first
``COMPILE_AFTER`` calls, and are then compiled and installed: a plan calls the ``__init__`` of the
classes it builds, most of them a few times, and rarely anything else. The compiled methods are
those the standard library writes (same signature and body), so the cost per call is the same.

The standard library's functions (``dataclasses.fields``, ``replace``, ``asdict``, ``is_dataclass``)
also work on these classes: ``__dataclass_fields__`` is built, with :mod:`dataclasses` imported, the
first time something reads it.
"""

from __future__ import annotations

__all__ = ["MISSING", "Field", "asdict", "dataclass", "field", "fields", "replace"]


class _Missing:
    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()
"""A field without a default (the standard library's sentinel plays the same role there)."""


def _frozen_error() -> type[AttributeError]:
    """The standard library's ``FrozenInstanceError`` (imported only when an assignment is refused),
    what a frozen record raises, so that code catching it catches ours."""
    import dataclasses

    return dataclasses.FrozenInstanceError


class Field:
    """One field: its name, annotation (a string under postponed annotations) and options."""

    __slots__ = ("name", "type", "default", "default_factory", "init", "repr", "hash", "compare")

    def __init__(self, default, default_factory, init, repr, hash, compare):  # noqa: A002, ANN001
        self.name = ""
        self.type: object = None
        self.default = default
        self.default_factory = default_factory
        self.init = init
        self.repr = repr
        self.hash = hash
        self.compare = compare

    def __repr__(self) -> str:
        return f"Field(name={self.name!r}, default={self.default!r}, default_factory={self.default_factory!r})"


def field(
    *,
    default: object = MISSING,
    default_factory: object = MISSING,
    init: bool = True,
    repr: bool = True,  # noqa: A002
    hash: bool | None = None,  # noqa: A002
    compare: bool = True,
) -> object:
    """A field's options, as ``dataclasses.field``."""
    if default is not MISSING and default_factory is not MISSING:
        raise ValueError("cannot specify both default and default_factory")
    return Field(default, default_factory, init, repr, hash, compare)


def fields(class_or_instance: object) -> tuple[Field, ...]:
    """The fields of a record class or instance, in definition order (base classes' first)."""
    try:
        return class_or_instance.__record_fields__  # type: ignore[union-attr]
    except AttributeError:
        raise TypeError("must be called with a record (dataclass) type or instance") from None


def replace(obj: object, /, **changes: object) -> object:
    """A copy of ``obj`` with ``changes``, made by its ``__init__`` (so ``__post_init__`` checks run)."""
    for f in fields(obj):
        if not f.init:
            if f.name in changes:
                raise ValueError(f"field {f.name} is declared with init=False, it cannot be specified with replace()")
            continue
        if f.name not in changes:
            changes[f.name] = getattr(obj, f.name)
    return type(obj)(**changes)


def asdict(obj: object) -> dict[str, object]:
    """``obj``'s fields as a dict, recursing into records, lists, tuples and dicts (as ``dataclasses.asdict``)."""
    fields(obj)
    return _asdict(obj)


def _asdict(obj: object) -> object:
    if hasattr(type(obj), "__record_fields__"):
        return {f.name: _asdict(getattr(obj, f.name)) for f in type(obj).__record_fields__}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*[_asdict(v) for v in obj])
    if isinstance(obj, (list, tuple)):
        return type(obj)(_asdict(v) for v in obj)
    if isinstance(obj, dict):
        return type(obj)((_asdict(k), _asdict(v)) for k, v in obj.items())
    import copy

    return copy.deepcopy(obj)


def dataclass(
    cls: type | None = None,
    /,
    *,
    frozen: bool = False,
    slots: bool = False,
    kw_only: bool = False,
    eq: bool = True,
    repr: bool = True,  # noqa: A002
    init: bool = True,
) -> object:
    """The class decorator, as ``dataclasses.dataclass`` with the options this package uses."""

    def wrap(c: type) -> type:
        return _process(c, frozen=frozen, slots=slots, kw_only=kw_only, eq=eq, repr_=repr, init=init)

    return wrap if cls is None else wrap(cls)


_MUTABLE = (list, dict, set)


def _process(cls: type, *, frozen: bool, slots: bool, kw_only: bool, eq: bool, repr_: bool, init: bool) -> type:
    inherited: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        for f in base.__dict__.get("__record_fields__", ()):
            inherited[f.name] = f
    own: list[Field] = []
    for name, annotation in cls.__dict__.get("__annotations__", {}).items():
        if isinstance(annotation, str) and annotation.startswith(("ClassVar", "typing.ClassVar")):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(value, MISSING, True, True, None, True)
        if isinstance(f.default, _MUTABLE):
            raise ValueError(f"mutable default {type(f.default)} for field {name} is not allowed: use default_factory")
        f.name, f.type = name, annotation
        own.append(f)
    all_fields = {**inherited, **{f.name: f for f in own}}
    ordered = tuple(all_fields.values())
    if init and not kw_only:
        seen_default = ""
        for f in ordered:
            if not f.init:
                continue
            if f.default is MISSING and f.default_factory is MISSING:
                if seen_default:
                    raise TypeError(f"non-default argument {f.name!r} follows default argument")
            else:
                seen_default = f.name

    body = dict(cls.__dict__)
    for f in own:  # a plain class keeps a field's default as its class attribute (as dataclasses does);
        # slots cannot have one (the default lives in __init__), and a Field() object never stays
        if slots or (f.default is MISSING and f.name in body):
            body[f.name] = _DROP
        elif f.default is not MISSING:
            body[f.name] = f.default
    if slots:
        body.pop("__dict__", None)
        body.pop("__weakref__", None)
        taken = {s for base in cls.__mro__[1:] for s in base.__dict__.get("__slots__", ())}
        body["__slots__"] = tuple(f.name for f in own if f.name not in taken)
    body["__record_fields__"] = ordered
    body["__record_options__"] = (frozen, kw_only, eq, repr_)
    body["__dataclass_fields__"] = _StdlibFields()
    if init and "__init__" not in cls.__dict__:
        body["__init__"] = _lazy("__init__")
    if repr_ and "__repr__" not in cls.__dict__:
        body["__repr__"] = _lazy("__repr__")
    if eq and "__eq__" not in cls.__dict__:
        body["__eq__"] = _lazy("__eq__")
    explicit_hash = "__hash__" in cls.__dict__ and not (cls.__dict__["__hash__"] is None and "__eq__" in cls.__dict__)
    if not explicit_hash:  # dataclasses' rule: eq and frozen hash the compared fields; eq alone is unhashable
        if eq and frozen:
            body["__hash__"] = _lazy("__hash__")
        elif eq:
            body["__hash__"] = None
    if frozen:
        for name in ("__setattr__", "__delattr__"):
            if name in cls.__dict__:
                raise TypeError(f"cannot overwrite attribute {name} in class {cls.__name__}")
        body["__setattr__"] = _frozen_setattr
        body["__delattr__"] = _frozen_delattr
        if slots:
            body["__getstate__"] = _getstate
            body["__setstate__"] = _setstate
    if slots:
        new = type(cls)(cls.__name__, cls.__bases__, {k: v for k, v in body.items() if v is not _DROP})
        new.__qualname__ = cls.__qualname__
        return new
    for key, value in body.items():
        if value is _DROP:
            type.__delattr__(cls, key)
        elif key not in cls.__dict__ or cls.__dict__[key] is not value:
            type.__setattr__(cls, key, value)
    return cls


_DROP = _Missing()
"""A class attribute the record removes (a field's ``field()`` object, a default over a slot)."""


class _StdlibFields:
    """``__dataclass_fields__``, built on first read with :mod:`dataclasses` imported: what the standard
    library's ``fields``, ``replace``, ``asdict`` and ``is_dataclass`` read. The dict then replaces this
    descriptor on its class, so later reads are plain attribute reads."""

    def __get__(self, obj: object, owner: type) -> dict[str, object]:
        import dataclasses

        out = {}
        for f in owner.__record_fields__:
            std = dataclasses.field(
                default=f.default if f.default is not MISSING else dataclasses.MISSING,
                default_factory=f.default_factory if f.default_factory is not MISSING else dataclasses.MISSING,
                init=f.init,
                repr=f.repr,
                hash=f.hash,
                compare=f.compare,
            )
            std.name, std.type = f.name, f.type
            std._field_type = dataclasses._FIELD  # noqa: SLF001  (what dataclasses marks a plain field with)
            out[f.name] = std
        type.__setattr__(owner, "__dataclass_fields__", out)
        return out


COMPILE_AFTER = 32
"""Calls a method of a class takes interpreted (``_GENERIC``) before its code is compiled (``_BUILDERS``).

A compile costs about 0.3 ms; a plan's start constructs most of its 30 record classes a few times
and a handful hundreds of times, so compiling on first call spent about 9 ms of a 75 ms start on
code run once or twice. The interpreted methods give the same results, errors included; they run
some 3 x slower per call, which a hot class pays only for its first calls."""


def _lazy(name: str) -> object:
    """A method that runs interpreted for its class's first ``COMPILE_AFTER`` calls, then compiles the
    real one, installs it on the class and calls it."""
    state: list = []  # [owner, generic method, calls left], filled on first call

    def first_call(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if not state:
            owner = next(c for c in type(self).__mro__ if c.__dict__.get(name) is first_call)
            state.extend((owner, _GENERIC[name](owner), COMPILE_AFTER))
        if state[2] > 0:
            state[2] -= 1
            return state[1](self, *args, **kwargs)
        real = _BUILDERS[name](state[0])
        type.__setattr__(state[0], name, real)
        return real(self, *args, **kwargs)

    first_call.__name__ = first_call.__qualname__ = name
    return first_call


def _plural(names: list[str]) -> str:
    """``'a'``, ``'a' and 'b'``, ``'a', 'b', and 'c'``: how CPython lists missing arguments."""
    quoted = [repr(n) for n in names]
    if len(quoted) < 3:
        return " and ".join(quoted)
    return ", ".join(quoted[:-1]) + ", and " + quoted[-1]


def _generic_init(cls: type) -> object:
    """``__init__`` interpreted from the field list: the compiled one's arguments, defaults, factories,
    ``init=False`` fields, ``__post_init__`` and argument errors (CPython's wording)."""
    frozen, kw_only, _, _ = cls.__record_options__
    where = f"{cls.__qualname__}.__init__()"
    plan = []  # (name, init, default, factory)
    for f in cls.__record_fields__:
        if f.init or f.default is not MISSING or f.default_factory is not MISSING:
            plan.append((f.name, f.init, f.default, f.default_factory))
    params = [p[0] for p in plan if p[1]]
    accepted = frozenset(params)
    positional = () if kw_only else tuple(params)
    ordered_required = [name for name, init, d, fac in plan if init and d is MISSING and fac is MISSING]
    required = frozenset(ordered_required)
    post_init = hasattr(cls, "__post_init__")
    put = object.__setattr__ if frozen else setattr
    kind = "keyword-only" if kw_only else "positional"
    most = 1 if kw_only else len(params) + 1  # self counts, as CPython counts it
    least = 1 if kw_only else 1 + len(required)
    if least == most:
        takes = f"{most} positional argument{'s' if most > 1 else ''}"
    else:
        takes = f"from {least} to {most} positional arguments"

    def missing(kwargs: dict) -> TypeError:
        names = [name for name in ordered_required if name not in kwargs]
        many = "s" if len(names) > 1 else ""
        return TypeError(f"{where} missing {len(names)} required {kind} argument{many}: {_plural(names)}")

    def __init__(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202, N807
        # CPython's order: each keyword in call order (unknown, or already given by position), then
        # too many positional arguments, then missing ones
        if args:
            bound = dict(zip(positional, args, strict=False))  # extra positional arguments bind nothing
            for name in kwargs:
                if name not in accepted:
                    raise TypeError(f"{where} got an unexpected keyword argument {name!r}")
                if name in bound:
                    raise TypeError(f"{where} got multiple values for argument {name!r}")
            if len(args) > len(positional):
                given = len(args) + 1
                extra = ""
                if kw_only and kwargs:
                    n = len(kwargs)
                    keywords = f"{n} keyword-only argument{'s' if n != 1 else ''}"
                    extra = f" positional argument{'s' if given != 1 else ''} (and {keywords})"
                raise TypeError(f"{where} takes {takes} but {given}{extra} were given")
            kwargs.update(bound)
        elif not kwargs.keys() <= accepted:
            unknown = next(name for name in kwargs if name not in accepted)
            raise TypeError(f"{where} got an unexpected keyword argument {unknown!r}")
        if not required <= kwargs.keys():
            raise missing(kwargs)
        for name, init, default, factory in plan:
            value = kwargs.get(name, default) if init else default
            if value is MISSING and factory is not MISSING:
                value = factory()
            put(self, name, value)
        if post_init:
            self.__post_init__()

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    return __init__


def _generic_repr(cls: type) -> object:
    names = [f.name for f in cls.__record_fields__ if f.repr]

    def __repr__(self):  # noqa: ANN001, ANN202, N807
        return f"{self.__class__.__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"

    return __repr__


def _values(names: list[str]) -> object:
    """A function of a record: the tuple of its ``names`` fields (``operator.attrgetter``, always a tuple)."""
    from operator import attrgetter  # imported by collections at every start: costs nothing here

    get = attrgetter(*names) if names else (lambda _: ())
    return (lambda obj: (get(obj),)) if len(names) == 1 else get


def _generic_eq(cls: type) -> object:
    values = _values([f.name for f in cls.__record_fields__ if f.compare])

    def __eq__(self, other):  # noqa: ANN001, ANN202, N807
        if other.__class__ is self.__class__:
            return values(self) == values(other)
        return NotImplemented

    return __eq__


def _generic_hash(cls: type) -> object:
    values = _values([f.name for f in cls.__record_fields__ if (f.compare if f.hash is None else f.hash)])

    def __hash__(self):  # noqa: ANN001, ANN202, N807
        return hash(values(self))

    return __hash__


def _compile(cls: type, name: str, args: str, lines: list[str], namespace: dict[str, object]) -> object:
    """Compile ``def name(args): lines`` with ``namespace`` as its globals, named as the class's own method."""
    source = f"def {name}({args}):\n" + "\n".join(f"    {line}" for line in lines or ["pass"])
    scope: dict[str, object] = {}
    exec(compile(source, f"<record {cls.__qualname__}.{name}>", "exec"), namespace, scope)  # noqa: S102
    fn = scope[name]
    fn.__qualname__ = f"{cls.__qualname__}.{name}"  # type: ignore[attr-defined]
    return fn


def _build_init(cls: type) -> object:
    frozen, kw_only, _, _ = cls.__record_options__
    namespace: dict[str, object] = {"MISSING": MISSING, "__object_setattr": object.__setattr__}
    params, lines = [], []
    for f in cls.__record_fields__:
        if f.default_factory is not MISSING:
            namespace[f"__factory_{f.name}"] = f.default_factory
            call = f"__factory_{f.name}()"
            value = f"{call} if {f.name} is MISSING else {f.name}" if f.init else call
            default = "MISSING"
        elif f.default is not MISSING:
            namespace[f"__default_{f.name}"] = f.default
            value = f.name if f.init else f"__default_{f.name}"
            default = f"__default_{f.name}"
        else:
            value, default = f.name, ""
        if f.init:
            params.append(f"{f.name}={default}" if default else f.name)
        elif f.default is MISSING and f.default_factory is MISSING:
            continue  # an init=False field without a default is left unset, as dataclasses leaves it
        lines.append(f"__object_setattr(self, {f.name!r}, {value})" if frozen else f"self.{f.name} = {value}")
    if hasattr(cls, "__post_init__"):
        lines.append("self.__post_init__()")
    args = ", ".join(["self", "*", *params] if kw_only and params else ["self", *params])
    return _compile(cls, "__init__", args, lines, namespace)


def _build_repr(cls: type) -> object:
    parts = ", ".join(f"{f.name}={{self.{f.name}!r}}" for f in cls.__record_fields__ if f.repr)
    return _compile(cls, "__repr__", "self", [f'return f"{{self.__class__.__qualname__}}({parts})"'], {})


def _build_eq(cls: type) -> object:
    names = [f.name for f in cls.__record_fields__ if f.compare]
    mine = "(" + "".join(f"self.{n}," for n in names) + ")"
    theirs = "(" + "".join(f"other.{n}," for n in names) + ")"
    lines = ["if other.__class__ is self.__class__:", f"    return {mine} == {theirs}", "return NotImplemented"]
    return _compile(cls, "__eq__", "self, other", lines, {})


def _build_hash(cls: type) -> object:
    names = [f.name for f in cls.__record_fields__ if (f.compare if f.hash is None else f.hash)]
    return _compile(cls, "__hash__", "self", ["return hash((" + "".join(f"self.{n}," for n in names) + "))"], {})


_BUILDERS = {"__init__": _build_init, "__repr__": _build_repr, "__eq__": _build_eq, "__hash__": _build_hash}
_GENERIC = {"__init__": _generic_init, "__repr__": _generic_repr, "__eq__": _generic_eq, "__hash__": _generic_hash}


def _frozen_setattr(self: object, name: str, value: object) -> None:
    raise _frozen_error()(f"cannot assign to field {name!r}")


def _frozen_delattr(self: object, name: str) -> None:
    raise _frozen_error()(f"cannot delete field {name!r}")


def _getstate(self: object) -> dict[str, object]:
    """A frozen slotted record's state for pickle and copy (which would otherwise assign through the
    refusing ``__setattr__``): its fields that are set."""
    return {f.name: getattr(self, f.name) for f in type(self).__record_fields__ if hasattr(self, f.name)}


def _setstate(self: object, state: dict[str, object]) -> None:
    for name, value in state.items():
        object.__setattr__(self, name, value)
