"""How stage settings refer to things outside them, for the readers shared by a rendered config and a spec.

A stage's settings read the same in a rendered config and in an AIRoute's spec except where a field refers to
something outside the object: a duration (seconds in a rendered config, "2s" in a spec), a pool (qualified in a
rendered config, a same-namespace name in a spec) and a credential (an id into the secrets document, or a
Secret reference the compiler turns into ids). A `Resolver` reads those; the stage readers (guardrails, cache,
web search, ...) write everything else, and every check on it, once, so a hand-written config is judged exactly
like a custom resource. `RENDERED` reads a rendered config; the compiler has the spec's resolver.
"""

from __future__ import annotations

from typing import Any, Protocol

from .reader import FieldReader


class Resolver(Protocol):
    """How the references of one kind of document are read (see the module docstring)."""

    def seconds(
        self, r: FieldReader, data: dict[str, Any], key: str, path: str, *, maximum: float | None = None
    ) -> float | None:
        """A duration in seconds (None when absent or invalid, the latter reported)."""
        ...

    def pool(self, r: FieldReader, data: dict[str, Any], key: str, path: str, providers: tuple[str, ...]) -> str | None:
        """The pool a stage calls, as the config names it (None: missing or invalid, already reported);
        `providers` are the protocols the call can be made in."""
        ...

    def credentials(
        self, r: FieldReader, value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> dict[str, str] | None:
        """Credential ids by name (`accessKeyId` -> id, ...), or None when they cannot be resolved (reported)."""
        ...


class RenderedResolver:
    """A rendered config: seconds, qualified pool names (checked against the pools later), credential ids."""

    def seconds(
        self, r: FieldReader, data: dict[str, Any], key: str, path: str, *, maximum: float | None = None
    ) -> float | None:
        value = r.seconds(data, key, path, None)
        if value is not None and maximum is not None and value > maximum:
            r.fail(f"{path}.{key}", f"must be at most {maximum:g} seconds, got {value:g}")
            return None
        return value

    def pool(self, r: FieldReader, data: dict[str, Any], key: str, path: str, providers: tuple[str, ...]) -> str | None:
        return r.str_(data, key, path, required=True)  # the snapshot warns when no such pool exists

    def credentials(
        self, r: FieldReader, value: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> dict[str, str] | None:
        data = r.obj(value, path)
        ids = {}
        for name in (*required, *optional):
            key_id = r.str_(data, name, path, required=name in required)
            if key_id is not None:
                ids[name] = key_id
        return ids if all(name in ids for name in required) else None


RENDERED = RenderedResolver()
