"""Which route and rule serve a request: by path prefix, host and the body's model name.

Precedence is deterministic: an exact model name beats a glob; then a route naming the host beats one that
accepts any host; then the glob with the longest literal prefix; then the route name and the rule's position.
Results are cached per snapshot, so steady traffic pays one dict lookup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fnmatch import translate

from tollway_contract.model import Route, Rule

_CACHE_LIMIT = 10_000


# Made on every request: not frozen (see Call)
@dataclass(slots=True)
class Match:
    route: Route
    rule: Rule
    pattern: str


def literal_prefix(pattern: str) -> str:
    for i, char in enumerate(pattern):
        if char in "*?[":
            return pattern[:i]
    return pattern


def is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def _host_matches(route: Route, host: str) -> bool:
    if not route.hosts:
        return True
    return any(allowed == host or (allowed.startswith("*.") and host.endswith(allowed[1:])) for allowed in route.hosts)


class Router:
    def __init__(self, routes: tuple[Route, ...]):
        # (rank key, compiled glob or None, Match); sorted once per snapshot
        entries: list[tuple[tuple[int, str, int, int], re.Pattern[str], Match]] = []
        self._exact: dict[str, list[Match]] = {}
        for route in sorted(routes, key=lambda r: r.name):
            for index, rule in enumerate(route.rules):
                for position, pattern in enumerate(rule.models):
                    match = Match(route, rule, pattern)
                    if is_glob(pattern):
                        rank = (-len(literal_prefix(pattern)), route.name, index, position)
                        entries.append((rank, re.compile(translate(pattern)), match))
                    else:
                        self._exact.setdefault(pattern, []).append(match)
        entries.sort(key=lambda e: e[0])
        self._globs = [(regex, match) for _, regex, match in entries]
        self._cache: dict[tuple[str, str, str], tuple[Match, ...]] = {}

    def candidates(self, prefix: str, host: str, model: str) -> tuple[Match, ...]:
        """Every rule that matches, best first. The caller picks the first one the consumer may use."""
        key = (prefix, host, model)
        found = self._cache.get(key)
        if found is not None:
            return found
        exact = [
            m for m in self._exact.get(model, ()) if m.route.path_prefix == prefix and _host_matches(m.route, host)
        ]
        globs = [
            m
            for regex, m in self._globs
            if m.route.path_prefix == prefix and _host_matches(m.route, host) and regex.match(model)
        ]
        # Stable sorts: host-specific routes first within each class, name order otherwise preserved.
        exact.sort(key=lambda m: not m.route.hosts)
        globs.sort(key=lambda m: (-len(literal_prefix(m.pattern)), not m.route.hosts))
        found = tuple(exact + globs)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = found
        return found
