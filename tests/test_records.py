"""lora_budget.records against the standard library's dataclasses: the same class, declared with each,
must behave the same for everything the package uses (and the standard library's functions must work
on records)."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from lora_budget import records


def _declare(dc, fld):
    """The same four classes, declared with ``dc`` / ``fld`` (dataclasses' or records')."""

    @dc(frozen=True, slots=True, kw_only=True)
    class Spec:
        name: str
        size: int = 7
        tags: tuple[str, ...] = ()
        extra: dict = fld(default_factory=dict, compare=False, repr=False)
        hidden: int = fld(default=3, init=False, repr=False, compare=False)
        score: float = fld(default=0.5, hash=False)

        def __post_init__(self):
            if self.size < 0:
                raise ValueError("size must be >= 0")

    @dc(frozen=True, slots=True)
    class Base:
        a: int
        b: str = "x"
        k: object = fld(default=None, init=False, repr=False, compare=False)

    @dc(frozen=True, slots=True)
    class Child(Base):
        c: tuple = ()

    @dc(slots=True)
    class Mutable:
        items: list = fld(default_factory=list)
        n: int = 0

    @dc
    class Plain:
        x: int = 1
        y: list = fld(default_factory=list)

    return Spec, Base, Child, Mutable, Plain


STD = _declare(dataclasses.dataclass, dataclasses.field)
REC = _declare(records.dataclass, records.field)


def _pair(index, *args, **kwargs):
    return STD[index](*args, **kwargs), REC[index](*args, **kwargs)


@pytest.mark.parametrize(
    "index, args, kwargs",
    [
        (0, (), {"name": "m"}),
        (0, (), {"name": "m", "size": 2, "tags": ("a",), "extra": {"k": 1}, "score": 1.5}),
        (1, (4,), {}),
        (1, (4, "y"), {}),
        (2, (1, "z", (2, 3)), {}),
        (3, (), {}),
        (3, ([1], 2), {}),
        (4, (), {}),
        (4, (5, [1]), {}),
    ],
)
def test_same_values_repr_eq_hash_and_state(index, args, kwargs):
    std, rec = _pair(index, *args, **kwargs)
    assert repr(rec).replace("REC", "STD") == repr(std)
    names = [f.name for f in dataclasses.fields(std)]
    assert [f.name for f in records.fields(rec)] == names
    assert [f.name for f in dataclasses.fields(rec)] == names  # the standard library reads records too
    assert {n: getattr(rec, n) for n in names} == {n: getattr(std, n) for n in names}
    assert rec == type(rec)(*args, **kwargs) and not (rec != type(rec)(*args, **kwargs))
    assert (rec == std) is False  # another class: NotImplemented both ways
    hashable = type(std).__hash__ is not None
    assert (type(rec).__hash__ is not None) == hashable
    if hashable:
        assert hash(rec) == hash(type(rec)(*args, **kwargs))
    assert records.asdict(rec) == dataclasses.asdict(std) == dataclasses.asdict(rec)
    assert hasattr(rec, "__dict__") == hasattr(std, "__dict__")
    assert getattr(type(rec), "__slots__", None) == getattr(type(std), "__slots__", None)


def test_hash_ignores_hash_false_and_compare_false_fields():
    a = REC[0](name="m", extra={"a": 1}, score=1.0)
    b = REC[0](name="m", extra={"b": 2}, score=2.0)
    assert a != b  # score compares
    assert hash(a) == hash(b)  # but is not hashed (hash=False); extra neither compares nor hashes
    assert REC[0](name="m", extra={"a": 1}) == REC[0](name="m", extra={"b": 2})


def test_init_errors_match():
    for cls in (STD[0], REC[0]):
        with pytest.raises(TypeError):
            cls("m")  # keyword-only
        with pytest.raises(TypeError):
            cls()  # name missing
        with pytest.raises(TypeError):
            cls(name="m", hidden=1)  # init=False
        with pytest.raises(ValueError, match="size must be"):
            cls(name="m", size=-1)  # __post_init__ runs
    with pytest.raises(TypeError):
        REC[1]()


def test_frozen_refuses_assignment_like_dataclasses():
    std, rec = _pair(0, name="m")
    for obj in (std, rec):
        with pytest.raises(dataclasses.FrozenInstanceError):
            obj.size = 3
        with pytest.raises(dataclasses.FrozenInstanceError):
            del obj.size
    assert rec.size == 7


def test_mutable_slots_assign_and_default_factories_are_fresh():
    a, b = REC[3](), REC[3]()
    a.items.append(1)
    a.n = 5
    assert b.items == [] and a.n == 5
    with pytest.raises(AttributeError):
        a.other = 1  # slots: no new attributes
    p = REC[4]()
    assert REC[4].x == 1 == STD[4].x  # a plain class keeps defaults as class attributes
    p.z = 3  # and has a __dict__


def test_replace_both_ways():
    rec = REC[0](name="m", tags=("a",))
    for r in (records.replace(rec, size=9), dataclasses.replace(rec, size=9)):
        assert type(r) is REC[0] and r.size == 9 and r.tags == ("a",) and r.name == "m"
    with pytest.raises(ValueError):
        records.replace(rec, hidden=1)
    with pytest.raises(ValueError, match="size must be"):
        records.replace(rec, size=-2)
    child = REC[2](1, c=(5,))
    assert records.replace(child, a=2) == REC[2](2, "x", (5,))


def test_pickle_and_copy_of_frozen_slotted_records():
    rec = _module_record(name="m", size=2)
    for clone in (pickle.loads(pickle.dumps(rec)), copy.copy(rec), copy.deepcopy(rec)):
        assert clone == rec and clone is not rec


_BAD_CALLS = [
    (0, ("m",), {}),  # keyword-only
    (0, (), {}),  # name missing
    (0, (), {"name": "m", "hidden": 1}),  # init=False
    (0, (), {"name": "m", "nope": 1}),
    (1, (), {}),
    (1, (1, "y", 3), {}),  # too many positional, with defaults: "from 2 to 3"
    (1, (1,), {"a": 2}),  # multiple values
    (2, (), {}),
    (3, (1, 2, 3), {}),
    (0, ("m",), {"name": "m"}),  # kw-only: "... 2 positional arguments (and 1 keyword-only argument) were given"
    (0, ("m",), {"zz": 1}),  # an unknown keyword is reported before too many positional arguments
    (1, (1,), {"bogus": 3, "a": 2}),  # keywords in call order: the unknown one first
    (1, (1, 2), {"b": 1, "a": 2}),  # ... and of two given twice, the first passed
    (1, (1, 2, 3, 4), {"k": 1}),
]


def _error(cls, args, kwargs):
    try:
        cls(*args, **kwargs)
    except TypeError as exc:
        return str(exc)
    raise AssertionError(f"{cls.__qualname__}{args}{kwargs} was accepted")


def test_interpreted_then_compiled_methods_give_the_same_results_and_errors():
    """Each method runs interpreted for its class's first ``COMPILE_AFTER`` calls, then compiled: both
    phases must give the standard library's values and its exact argument errors (same wording,
    since both classes have the same qualified name)."""
    std_cls, _, _, _, _ = STD
    rec_classes = _declare(records.dataclass, records.field)  # fresh classes: nothing compiled yet
    for phase in ("interpreted", "compiled"):
        for index, args, kwargs in _BAD_CALLS:
            assert _error(rec_classes[index], args, kwargs) == _error(STD[index], args, kwargs), (phase, index, args)
        std, rec = std_cls(name="m", size=2), rec_classes[0](name="m", size=2)
        assert repr(rec) == repr(std) and hash(rec) == hash(std)  # the same fields hashed, as a tuple
        assert rec == rec_classes[0](name="m", size=2) and rec != rec_classes[0](name="n", size=2)
        assert rec_classes[3]().items is not rec_classes[3]().items  # a fresh default_factory value each time
        compiled = rec_classes[0].__init__.__code__.co_filename.startswith("<record")
        assert compiled is (phase == "compiled"), phase
        if phase == "interpreted":
            for cls in rec_classes:
                kwargs = {"name": "m"} if cls is rec_classes[0] else {"a": 1} if cls in rec_classes[1:3] else {}
                for _ in range(records.COMPILE_AFTER + 1):
                    obj = cls(**kwargs)
                    repr(obj), obj == obj  # noqa: B015
                    if cls.__hash__ is not None:
                        hash(obj)
    for cls in rec_classes:
        for name in ("__init__", "__repr__", "__eq__", "__hash__"):
            method = cls.__dict__.get(name)
            if method is not None:  # a plain class inherits object's hash; eq without frozen sets None
                assert method.__code__.co_filename.startswith("<record"), (cls.__qualname__, name)


@pytest.mark.parametrize("n_fields", [0, 1, 3])
def test_eq_and_hash_of_few_fields_match_dataclasses(n_fields):
    """Hash and eq of records with no, one and several compared fields, interpreted and compiled:
    the standard library hashes the tuple of the compared fields (a one-tuple for one field)."""
    body = "".join(f"    f{i}: int = {i}\n" for i in range(n_fields)) or "    pass\n"
    classes = []
    for dc in (dataclasses.dataclass, records.dataclass):
        ns: dict = {"dc": dc}
        exec(f"@dc(frozen=True)\nclass R:\n{body}", ns)  # noqa: S102
        classes.append(ns["R"])
    std_cls, rec_cls = classes
    for _ in range(records.COMPILE_AFTER + 2):  # through the interpreted calls into the compiled
        std, rec = std_cls(), rec_cls()
        assert hash(rec) == hash(std) and rec == rec_cls() and repr(rec) == repr(std)
    assert rec_cls.__hash__.__code__.co_filename.startswith("<record")


def test_methods_are_the_compiled_ones_after_first_calls():
    cls = REC[1]
    for _ in range(records.COMPILE_AFTER + 1):
        repr(cls(1))
    assert cls.__init__.__code__.co_filename.startswith("<record")
    assert cls.__repr__.__qualname__.endswith("Base.__repr__")
    assert cls.__init__.__code__.co_kwonlyargcount == 0 and REC[0].__init__ is not cls.__init__


def test_mutable_default_refused_like_dataclasses():
    with pytest.raises(ValueError):

        @records.dataclass
        class Bad:
            x: list = []  # noqa: RUF012


def test_non_default_after_default_refused():
    with pytest.raises(TypeError):

        @records.dataclass
        class Bad:
            x: int = 1
            y: int


@records.dataclass(frozen=True, slots=True, kw_only=True)
class _Module:
    name: str
    size: int = 1


def _module_record(**kwargs):
    return _Module(**kwargs)
