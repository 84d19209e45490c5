"""Record: a small frozen keyword record, for Options and the relay's settings.

What ``dataclasses.dataclass(frozen=True)`` gives, without its import cost
(``dataclasses`` pulls in ``inspect``: about a third of pync's start-up):
fields are the class's plain attributes with their defaults, set by
keyword, never changed after; ``replace`` makes a changed copy.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    R = TypeVar("R", bound="Record")


class Record:
    """Keyword-only construction, frozen instances, equality by fields."""

    _defaults: dict[str, Any] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        """Collect the fields: the class's public plain attributes (not
        methods, not properties), base classes first."""
        super().__init_subclass__(**kw)
        fields: dict[str, Any] = {}
        for klass in reversed(cls.__mro__[:-1]):
            for name, value in vars(klass).items():
                if not (name.startswith("_") or callable(value)
                        or isinstance(value, (property, classmethod, staticmethod))):
                    fields[name] = value
        cls._defaults = fields

    def __init__(self, **fields: Any) -> None:
        for name, value in fields.items():
            if name not in self._defaults:
                raise TypeError(f"{type(self).__name__} has no field {name!r}")
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is frozen")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(self) == vars(other)

    def __hash__(self) -> int:
        return hash(tuple(sorted(vars(self).items(), key=lambda kv: kv[0])))

    def __repr__(self) -> str:
        changed = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({changed})"


def replace(record: R, **changes: Any) -> R:
    """A copy of record with some fields changed."""
    return type(record)(**{**vars(record), **changes})
