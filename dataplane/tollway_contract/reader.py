"""A small walker over plain data that records every problem with the path of the field it concerns."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A document is invalid. `problems` lists every `path: message` found."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


class FieldReader:
    """Walks a plain-data document, recording problems with their paths instead of raising at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)

    def obj(self, value: Any, path: str) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.fail(path, f"must be an object, got {describe_kind(value)}")
            return {}
        return value

    def items(self, value: Any, path: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.fail(path, f"must be a list, got {describe_kind(value)}")
            return []
        return value

    def str_(self, data: dict[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                self.fail(join_path(path, key), "is required")
            return None
        if not isinstance(value, str) or (required and not value):
            self.fail(join_path(path, key), f"must be a non-empty string, got {describe_kind(value)}")
            return None
        return value

    def int_(self, data: dict[str, Any], key: str, path: str, default: int | None, minimum: int = 0) -> int | None:
        value = data.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(join_path(path, key), f"must be an integer, got {describe_kind(value)}")
            return default
        if value < minimum:
            self.fail(join_path(path, key), f"must be at least {minimum}, got {value}")
            return default
        return value

    def seconds(self, data: dict[str, Any], key: str, path: str, default: float | None) -> float | None:
        value = data.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            self.fail(join_path(path, key), f"must be a positive number of seconds, got {value!r}")
            return default
        return float(value)

    def size(self, data: dict[str, Any], key: str, path: str, default: int) -> int:
        """A size in bytes: an integer, or a string with a binary or decimal suffix ("512Ki", "1Mi", "10MB")."""
        value = data.get(key, default)
        parsed = parse_size(value)
        if parsed is None:
            self.fail(join_path(path, key), f"must be a size in bytes such as 1048576 or 1Mi, got {value!r}")
            return default
        return parsed

    def number(self, data: dict[str, Any], key: str, path: str, default: float, *, low: float, high: float) -> float:
        """A number within [low, high]."""
        value = data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
            self.fail(join_path(path, key), f"must be a number from {low:g} to {high:g}, got {value!r}")
            return default
        return float(value)

    def bool_(self, data: dict[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key, default)
        if not isinstance(value, bool):
            self.fail(join_path(path, key), f"must be true or false, got {describe_kind(value)}")
            return default
        return value

    def enum(self, data: dict[str, Any], key: str, path: str, allowed: tuple[str, ...], default: str) -> str:
        value = data.get(key, default)
        if value not in allowed:
            self.fail(join_path(path, key), f"must be one of {', '.join(allowed)}; got {value!r}")
            return default
        return str(value)

    def strings(self, data: dict[str, Any], key: str, path: str) -> tuple[str, ...]:
        out = []
        for i, item in enumerate(self.items(data.get(key), join_path(path, key))):
            if isinstance(item, str) and item:
                out.append(item)
            else:
                self.fail(f"{join_path(path, key)}[{i}]", f"must be a non-empty string, got {describe_kind(item)}")
        return tuple(out)

    def pairs(self, data: dict[str, Any], key: str, path: str) -> tuple[tuple[str, str], ...]:
        mapping = self.obj(data.get(key), join_path(path, key))
        out = []
        for k, v in mapping.items():
            if not isinstance(v, str):
                self.fail(join_path(join_path(path, key), str(k)), f"must be a string, got {describe_kind(v)}")
                continue
            out.append((str(k), v))
        return tuple(sorted(out))

    def each(self, value: Any, path: str, parse: Callable[[dict[str, Any], str], T | None]) -> tuple[T, ...]:
        out = []
        for i, item in enumerate(self.items(value, path)):
            parsed = parse(self.obj(item, f"{path}[{i}]"), f"{path}[{i}]")
            if parsed is not None:
                out.append(parsed)
        return tuple(out)


_SIZE_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
_SIZE_UNITS |= {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}


def parse_size(value: Any) -> int | None:
    """Bytes from an integer or a string such as "1Mi"; None when it is neither (or negative)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if not isinstance(value, str):
        return None
    text = value.strip()
    digits = len(text) - len(text.lstrip("0123456789"))
    if not digits or text[digits:] not in _SIZE_UNITS:
        return None
    return int(text[:digits]) * _SIZE_UNITS[text[digits:]]


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def describe_kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)
