"""Model matching precedence: exact beats glob, host-specific beats any host, longest literal prefix, then name."""

from __future__ import annotations

import pytest
from tollway_contract.model import Backend, Route, Rule
from tollway_dataplane.routing import Router, literal_prefix


def route(name: str, *models: str, hosts: tuple[str, ...] = (), prefix: str = "/v1") -> Route:
    return Route(
        name=name, rules=(Rule(models=models, backends=(Backend(pool="p"),)),), hosts=hosts, path_prefix=prefix
    )


def winner(router: Router, model: str, host: str = "any.example", prefix: str = "/v1") -> str | None:
    found = router.candidates(prefix, host, model)
    return f"{found[0].route.name}:{found[0].pattern}" if found else None


def test_exact_beats_glob_even_from_an_earlier_route() -> None:
    router = Router((route("a/first", "gpt-*"), route("b/second", "gpt-4o")))
    assert winner(router, "gpt-4o") == "b/second:gpt-4o"
    assert winner(router, "gpt-4o-mini") == "a/first:gpt-*"


def test_longest_literal_prefix_wins_among_globs() -> None:
    router = Router((route("a/r", "*", "gpt-*", "gpt-4o-*", "gpt-4?-mini"),))
    assert winner(router, "gpt-4o-mini") == "a/r:gpt-4o-*"
    assert winner(router, "gpt-4x-mini") == "a/r:gpt-4?-mini"
    assert winner(router, "gpt-3.5") == "a/r:gpt-*"
    assert winner(router, "claude") == "a/r:*"


def test_ties_break_by_route_name_whatever_the_input_order() -> None:
    routes = (route("ns/zeta", "m-*"), route("ns/alpha", "m-*"))
    assert winner(Router(routes), "m-1") == "ns/alpha:m-*"
    assert winner(Router(tuple(reversed(routes))), "m-1") == "ns/alpha:m-*"


def test_host_specific_routes_come_first_and_others_do_not_match() -> None:
    router = Router(
        (route("a/any", "m"), route("b/corp", "m", hosts=("llm.corp.example",)), route("c/wild", "w", hosts=("*.dev",)))
    )
    assert winner(router, "m", host="llm.corp.example") == "b/corp:m"
    assert winner(router, "m", host="other") == "a/any:m"
    assert winner(router, "w", host="team.dev") == "c/wild:w"
    assert winner(router, "w", host="dev") is None


def test_path_prefix_separates_routes() -> None:
    router = Router((route("a/v1", "m"), route("a/alt", "m", prefix="/alt/v1")))
    assert winner(router, "m", prefix="/alt/v1") == "a/alt:m"
    assert winner(router, "m", prefix="/v2") is None


def test_all_candidates_are_returned_best_first() -> None:
    router = Router((route("a/x", "m-*"), route("b/y", "m-1")))
    assert [m.route.name for m in router.candidates("/v1", "h", "m-1")] == ["b/y", "a/x"]


@pytest.mark.parametrize(("pattern", "prefix"), [("gpt-*", "gpt-"), ("a?c", "a"), ("[ab]x", ""), ("plain", "plain")])
def test_literal_prefix(pattern: str, prefix: str) -> None:
    assert literal_prefix(pattern) == prefix
