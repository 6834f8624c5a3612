"""Web-search grounding end to end: the real gateway, the mock LLM (echoing what it was sent, or scripted to cite
[n] markers) and mock engines that check what they receive. Also the compiler's handling of engine Secrets, and
the citations filter alone for markers split across stream chunks."""

from __future__ import annotations

import json
import logging
import textwrap
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anthropic
import orjson
import pytest
from conftest import GatewayFactory, GatewayHandle, MockLLM, read_sse
from fixtures.openresponses.schema import assert_events, assert_response
from fixtures.providers.support import provider_crs
from search_engines import MockEngine, running_engines
from tollway_dataplane.answer import Answer
from tollway_dataplane.metrics import REGISTRY
from tollway_dataplane.stages.websearch.citations import CitationsFilter
from tollway_dataplane.stages.websearch.results import SearchResult, merge
from tollway_operator.compiler import compile_crs

CHAT = "/v1/chat/completions"
ROUTE = "default/chat"

SECRETS = """
    apiVersion: v1
    kind: Secret
    metadata: {name: tavily-key, namespace: default}
    stringData: {apiKey: tvly-test}
    ---
    apiVersion: v1
    kind: Secret
    metadata: {name: google-key, namespace: default}
    stringData: {apiKey: g-test, cx: cx-test}
    ---
    apiVersion: v1
    kind: Secret
    metadata: {name: iqs-key, namespace: default}
    stringData: {apiKey: iqs-test}
    ---
    apiVersion: v1
    kind: Secret
    metadata: {name: es-key, namespace: default}
    stringData: {apiKey: es-test}
"""


def engine_spec(engines: dict[str, MockEngine], *kinds: str, **extra: Any) -> list[dict[str, Any]]:
    specs = {
        "searxng": {"type": "searxng"},
        "tavily": {"type": "tavily", "credentials": {"secretRef": {"name": "tavily-key"}}},
        "google": {"type": "google", "credentials": {"secretRef": {"name": "google-key"}}},
        "quark": {"type": "quark", "credentials": {"secretRef": {"name": "iqs-key"}}},
        "arxiv": {"type": "arxiv"},
        "elasticsearch": {
            "type": "elasticsearch",
            "index": "kb",
            "matchFields": ["title^2", "body"],
            "snippetField": "body",
            "urlField": "link",
            "credentials": {"secretRef": {"name": "es-key"}},
        },
    }
    return [{**specs[k], "url": engines[k].url, **extra} for k in kinds]


def search_crs(
    llm: MockLLM, web_search: dict[str, Any] | None, provider: str = "openai-compatible", models: str = '["*"]'
) -> dict[str, str]:
    files = provider_crs(llm.url, provider)
    route = textwrap.dedent(files["route.yaml"]).rstrip()
    route = route.replace('["mock-*", "claude-*", "gemini-*", "gpt-*"]', models)
    if web_search is not None:
        route += "\n  webSearch: " + json.dumps(web_search)
    files["route.yaml"] = route
    files["secrets.yaml"] = SECRETS
    return files


def ask(question: str = "Who won the match yesterday?", **extra: Any) -> dict[str, Any]:
    return {"model": "mock-gpt", "messages": [{"role": "user", "content": question}], **extra}


async def post(gateway: GatewayHandle, body: dict[str, Any], **kwargs: Any) -> tuple[int, Any]:
    async with gateway.post(CHAT, body, **kwargs) as response:
        if body.get("stream"):
            return response.status, await read_sse(response)
        return response.status, await response.json()


async def chat_requests(llm: MockLLM) -> list[dict[str, Any]]:
    return [r for r in await llm.requests() if r["path"].endswith("/chat/completions")]


def echoed(answer: dict[str, Any]) -> dict[str, Any]:
    """What the mock LLM was sent, from its echo answer."""
    return json.loads(answer["choices"][0]["message"]["content"])["body"]  # type: ignore[no-any-return]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def engines() -> AsyncIterator[dict[str, MockEngine]]:
    async with running_engines() as started:
        yield started


@pytest.fixture
def access_log() -> Iterator[list[dict[str, Any]]]:
    lines: list[dict[str, Any]] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(json.loads(record.getMessage()))

    logger = logging.getLogger("tollway.access")
    handler, level = Handler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


# -- when to search -------------------------------------------------------------------------------------------


async def test_auto_searches_only_when_the_caller_sends_web_search_options(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine], access_log: list[Any]
) -> None:
    gateway = await make_gateway(search_crs(mock_llm, {"engines": engine_spec(engines, "searxng")}))
    await mock_llm.script({"echo": True}, times=0, path="/chat/completions")

    status, plain = await post(gateway, ask())
    assert status == 200 and engines["searxng"].received == []
    assert [m["role"] for m in echoed(plain)["messages"]] == ["user"]

    status, grounded = await post(gateway, ask(web_search_options={}))
    assert status == 200
    (request,) = engines["searxng"].received
    assert request["query"]["q"] == "Who won the match yesterday?" and request["query"]["format"] == "json"
    sent = echoed(grounded)
    assert "web_search_options" not in sent  # the gateway searched; the provider never sees the option
    system, user = sent["messages"]
    assert system["role"] == "system" and user == {"role": "user", "content": "Who won the match yesterday?"}
    assert "[1] searxng first\nhttps://searxng.example/first\nWhat searxng found first." in system["content"]
    assert "[2] searxng second" in system["content"] and "UTC" in system["content"]
    assert system["content"].endswith("Question: Who won the match yesterday?")

    searched = [line["ai_log"]["search"] for line in access_log if line["ai_log"].get("search")]
    assert searched[-1]["decision"] == "searched" and searched[-1]["trigger"] == "web_search_options"
    assert searched[-1]["queries"] == ["Who won the match yesterday?"] and searched[-1]["results"] == 2
    assert searched[-1]["engines"]["searxng"]["status"] == "ok"
    assert "found first" not in json.dumps(searched)  # never the results' text
    assert sample("tollway_search_decisions_total", route=ROUTE, decision="not_asked") >= 1


async def test_search_context_size_sets_how_many_results(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    engines["tavily"].serve(*[(f"t{i}", f"https://t.example/{i}", f"s{i}") for i in range(20)])
    config = {"engines": engine_spec(engines, "tavily"), "maxResults": 4}
    gateway = await make_gateway(search_crs(mock_llm, config))
    await mock_llm.script({"echo": True}, times=0, path="/chat/completions")
    counts = {}
    for size in ("low", "medium", "high"):
        _, answer = await post(gateway, ask(web_search_options={"search_context_size": size}))
        system = echoed(answer)["messages"][0]["content"]
        counts[size] = system.count("https://t.example/")
    assert counts == {"low": 2, "medium": 4, "high": 8}
    assert [r["body"]["max_results"] for r in engines["tavily"].received] == [2, 4, 8]


async def test_always_searches_every_question_but_not_tool_turns(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    gateway = await make_gateway(
        search_crs(mock_llm, {"enabled": "always", "engines": engine_spec(engines, "searxng")})
    )
    await post(gateway, ask())
    assert len(engines["searxng"].received) == 1
    tool_turn = {
        "model": "mock-gpt",
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
    }
    status, _ = await post(gateway, tool_turn)
    assert status == 200 and len(engines["searxng"].received) == 1  # an agent loop in progress is not searched


async def test_off_on_a_rule_replaces_the_route_setting(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    files = search_crs(mock_llm, {"enabled": "always", "engines": engine_spec(engines, "searxng")}, models='["mock-*"]')
    files["route.yaml"] = files["route.yaml"].replace(
        "      backends: [{pool: up}]",
        "      backends: [{pool: up}]\n    - models: [plain]\n      backends: [{pool: up}]\n"
        "      webSearch: {enabled: 'off', engines: [{type: arxiv}]}",
        1,
    )
    gateway = await make_gateway(files)
    await post(gateway, ask() | {"model": "plain"})
    assert engines["searxng"].received == []
    await post(gateway, ask())
    assert len(engines["searxng"].received) == 1


# -- the rewrite -----------------------------------------------------------------------------------------------


def with_rewrite(engines: dict[str, MockEngine], *kinds: str, **extra: Any) -> dict[str, Any]:
    return {"engines": engine_spec(engines, *kinds), "rewrite": {"pool": "up", "model": "rewriter"}, **extra}


async def test_rewrite_says_no_search_is_needed(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    gateway = await make_gateway(search_crs(mock_llm, with_rewrite(engines, "searxng", "tavily")))
    await mock_llm.script(
        {"content": '{"queries": []}', "usage": {"prompt_tokens": 40, "completion_tokens": 6}}, model="rewriter"
    )
    await mock_llm.script({"echo": True}, model="mock-gpt")
    status, answer = await post(gateway, ask("Hello there!"))
    assert status == 200
    assert engines["searxng"].received == [] and engines["tavily"].received == []
    assert [m["role"] for m in echoed(answer)["messages"]] == ["user"]
    rewrite_call = next(r for r in await chat_requests(mock_llm) if r["body"]["model"] == "rewriter")
    assert rewrite_call["body"]["messages"][-1]["content"] == "user: Hello there!"
    assert "JSON" in rewrite_call["body"]["messages"][0]["content"]
    assert sample("tollway_search_rewrites_total", route=ROUTE, outcome="none_needed") >= 1
    assert sample("tollway_search_rewrite_tokens_total", route=ROUTE, kind="input") >= 40


async def test_rewrite_queries_are_searched_on_every_engine(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    gateway = await make_gateway(search_crs(mock_llm, with_rewrite(engines, "searxng", "tavily")))
    await mock_llm.script({"content": '```json\n{"queries": ["final score", "match report"]}\n```'}, model="rewriter")
    await post(gateway, ask())
    assert sorted(engines["searxng"].queries) == ["final score", "match report"]
    assert sorted(engines["tavily"].queries) == ["final score", "match report"]


async def test_the_callers_option_is_honoured_whatever_the_rewrite_says(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    gateway = await make_gateway(search_crs(mock_llm, with_rewrite(engines, "searxng")))
    await mock_llm.script({"content": '{"queries": []}'}, model="rewriter")
    await post(gateway, ask(web_search_options={}))
    assert engines["searxng"].queries == ["Who won the match yesterday?"]


# A 400 fails the rewrite without benching the pool's key, which the caller's own request shares here.
@pytest.mark.parametrize("failure", [{"status": 400, "error": "bad model"}, {"content": "Sure! Search for it."}])
async def test_a_failed_rewrite_searches_the_last_user_turn(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine], failure: dict[str, Any]
) -> None:
    gateway = await make_gateway(search_crs(mock_llm, with_rewrite(engines, "searxng")))
    await mock_llm.script(failure, model="rewriter")
    await mock_llm.script({"echo": True}, model="mock-gpt")
    status, answer = await post(gateway, ask())
    assert status == 200 and engines["searxng"].queries == ["Who won the match yesterday?"]
    assert echoed(answer)["messages"][0]["role"] == "system"
    assert sample("tollway_search_rewrites_total", route=ROUTE, outcome="failed") >= 1


# -- engines ---------------------------------------------------------------------------------------------------


async def test_every_engine_gets_its_own_request_and_results_are_merged_by_url(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    kinds = ("searxng", "tavily", "google", "quark", "arxiv", "elasticsearch")
    engines["tavily"].serve(
        ("Shared page", "https://searxng.example/first/", "The same page again."),  # a duplicate of searxng's first
        ("tavily own", "https://tavily.example/own", "Only Tavily has this."),
    )
    gateway = await make_gateway(search_crs(mock_llm, {"engines": engine_spec(engines, *kinds), "maxResults": 20}))
    await mock_llm.script({"echo": True}, times=0, path="/chat/completions")
    location = {"type": "approximate", "approximate": {"country": "GB", "city": "London", "timezone": "Europe/London"}}
    _, answer = await post(gateway, ask("football results", web_search_options={"user_location": location}))

    (searx,) = engines["searxng"].received
    assert searx["method"] == "GET" and searx["query"] == {"q": "football results", "format": "json", "pageno": "1"}
    (tavily,) = engines["tavily"].received
    assert tavily["headers"]["authorization"] == "Bearer tvly-test"
    assert tavily["body"] == {
        "query": "football results",
        "max_results": 20,
        "search_depth": "basic",
        "topic": "general",
    }
    (google,) = engines["google"].received
    assert google["headers"]["x-goog-api-key"] == "g-test" and "key" not in google["query"]
    assert google["query"] == {"cx": "cx-test", "q": "football results", "num": "10", "gl": "gb"}
    (quark,) = engines["quark"].received
    assert quark["headers"]["x-api-key"] == "iqs-test" and quark["query"]["query"] == "football results"
    (arxiv,) = engines["arxiv"].received
    assert arxiv["query"] == {"search_query": "all:football AND all:results", "start": "0", "max_results": "20"}
    (es,) = engines["elasticsearch"].received
    assert es["path"] == "/kb/_search" and es["headers"]["authorization"] == "ApiKey es-test"
    assert es["body"]["query"] == {"multi_match": {"query": "football results", "fields": ["title^2", "body"]}}
    assert es["body"]["size"] == 20 and sorted(es["body"]["_source"]) == ["body", "link", "title"]

    system = echoed(answer)["messages"][0]["content"]
    urls = [line for line in system.splitlines() if line.startswith("https://")]
    # Interleaved by rank in engine order, the duplicate URL once (searxng found it first).
    assert urls == [
        "https://searxng.example/first",
        "https://google.example/first",
        "https://quark.example/first",
        "https://arxiv.example/first",
        "https://elasticsearch.example/first",
        "https://searxng.example/second",
        "https://tavily.example/own",
        "https://google.example/second",
        "https://quark.example/second",
        "https://arxiv.example/second",
        "https://elasticsearch.example/second",
    ]
    assert "Shared page" not in system
    assert "What arxiv found first. Authors: A. Author, B. Author. 2026-11-30" in system
    # The caller's time zone is used for the local date when the route sets none.
    assert "Europe/London (UTC+00:00)" in system


async def test_elasticsearch_documents_without_a_url_are_cited_by_their_index_url(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    engines["elasticsearch"].serve(("Leave policy", "", "Twenty-five days a year."))
    spec = engine_spec(engines, "elasticsearch")
    del spec[0]["urlField"], spec[0]["credentials"]
    gateway = await make_gateway(search_crs(mock_llm, {"engines": spec, "enabled": "always"}))
    await mock_llm.script({"echo": True}, times=0, path="/chat/completions")
    _, answer = await post(gateway, ask("How many days of leave do I get?"))
    assert f"{engines['elasticsearch'].url}/kb/_doc/doc-0" in echoed(answer)["messages"][0]["content"]
    assert "authorization" not in engines["elasticsearch"].received[0]["headers"]


async def test_one_engine_down_is_skipped_and_counted(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine], access_log: list[Any]
) -> None:
    engines["tavily"].status = 503
    engines["google"].delay = 2.0
    spec = engine_spec(engines, "searxng", "tavily") + engine_spec(engines, "google", timeout="200ms")
    gateway = await make_gateway(search_crs(mock_llm, {"engines": spec}))
    await mock_llm.script({"echo": True}, times=0, path="/chat/completions")
    before = sample("tollway_search_requests_total", route=ROUTE, engine="tavily", status="error")
    status, answer = await post(gateway, ask(web_search_options={}))
    assert status == 200
    system = echoed(answer)["messages"][0]["content"]
    assert "searxng first" in system and "tavily" not in system and "google" not in system
    assert sample("tollway_search_requests_total", route=ROUTE, engine="tavily", status="error") == before + 1
    assert sample("tollway_search_requests_total", route=ROUTE, engine="google", status="timeout") >= 1
    assert sample("tollway_search_requests_total", route=ROUTE, engine="searxng", status="ok") >= 1
    report = access_log[-1]["ai_log"]["search"]["engines"]
    assert {name: e["status"] for name, e in report.items()} == {
        "searxng": "ok",
        "tavily": "error",
        "google": "timeout",
    }


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_every_engine_down(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine], policy: str
) -> None:
    engines["searxng"].status = 500
    engines["tavily"].status = 429
    config = {"engines": engine_spec(engines, "searxng", "tavily"), "failurePolicy": policy}
    gateway = await make_gateway(search_crs(mock_llm, config))
    await mock_llm.script({"echo": True}, times=0, path="/chat/completions")
    status, answer = await post(gateway, ask(web_search_options={}))
    if policy == "open":
        assert status == 200
        sent = echoed(answer)
        assert [m["role"] for m in sent["messages"]] == ["user"] and "web_search_options" not in sent
    else:
        assert status == 503
        assert answer["error"]["code"] == "search_unavailable"
        assert await chat_requests(mock_llm) == []
    assert sample("tollway_search_decisions_total", route=ROUTE, decision=f"failed_{policy}") >= 1


async def test_a_missing_engine_key_is_unconfigured_not_a_crash(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    files = search_crs(mock_llm, {"engines": engine_spec(engines, "searxng", "tavily")})
    files["secrets.yaml"] = files["secrets.yaml"].replace("name: tavily-key", "name: other-key")
    gateway = await make_gateway(files)
    status, _ = await post(gateway, ask(web_search_options={}))
    assert status == 200 and engines["tavily"].received == [] and len(engines["searxng"].received) == 1
    assert sample("tollway_search_requests_total", route=ROUTE, engine="tavily", status="unconfigured") >= 1


# -- citations -------------------------------------------------------------------------------------------------

CITED = "Paris won [1]. The score was 2-1 [2], as reported [1][3]. Tickets cost [9] euros."


def cited_crs(llm: MockLLM, engines: dict[str, MockEngine], citations: str, **extra: Any) -> dict[str, str]:
    engines["searxng"].serve(
        ("Match report", "https://news.example/report", "Paris won."),
        ("Score", "https://scores.example/1", "2-1."),
        ("Highlights", "https://video.example/h", "Goals."),
    )
    return search_crs(llm, {"engines": engine_spec(engines, "searxng"), "citations": citations, **extra}, **{})


def expected_annotations(content: str) -> list[dict[str, Any]]:
    urls = {
        1: ("https://news.example/report", "Match report"),
        2: ("https://scores.example/1", "Score"),
        3: ("https://video.example/h", "Highlights"),
    }
    out = []
    for marker in ("[1]", "[2]", "[1]", "[3]"):
        start = content.index(marker, out[-1]["url_citation"]["end_index"] if out else 0)
        number = int(marker[1])
        out.append(
            {
                "type": "url_citation",
                "url_citation": {
                    "url": urls[number][0],
                    "title": urls[number][1],
                    "start_index": start,
                    "end_index": start + 3,
                },
            }
        )
    return out


async def test_annotations_point_at_the_markers_the_model_wrote(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    gateway = await make_gateway(cited_crs(mock_llm, engines, "annotations"))
    await mock_llm.script({"content": CITED})
    _, answer = await post(gateway, ask(web_search_options={}))
    message = answer["choices"][0]["message"]
    assert message["content"] == CITED
    assert message["annotations"] == expected_annotations(CITED)  # [9] is out of range: not a citation
    for a in message["annotations"]:
        span = a["url_citation"]
        assert CITED[span["start_index"] : span["end_index"]] in ("[1]", "[2]", "[3]")


async def test_annotations_on_a_stream_arrive_before_the_finish_chunk(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    content = "Le PSG a gagné [1] — 2-1 🎉 [2]. Vu [1][3]. Prix [9]."
    gateway = await make_gateway(cited_crs(mock_llm, engines, "annotations"))
    await mock_llm.script({"content": content})  # one word per chunk: markers at chunk edges
    _, events = await post(gateway, ask(web_search_options={}, stream=True, stream_options={"include_usage": True}))
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == b"[DONE]"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == content
    finish = next(i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["finish_reason"])
    annotated = [i for i, c in enumerate(chunks) if c["choices"] and c["choices"][0]["delta"].get("annotations")]
    assert annotated == [finish - 1]
    found = chunks[finish - 1]["choices"][0]["delta"]["annotations"]
    assert [text[a["url_citation"]["start_index"] : a["url_citation"]["end_index"]] for a in found] == [
        "[1]",
        "[2]",
        "[1]",
        "[3]",
    ]
    assert chunks[finish - 1]["id"] == chunks[finish]["id"] and chunks[finish - 1]["usage"] is None
    assert chunks[-1]["usage"]["completion_tokens"] > 0  # the usage chunk is still last


async def test_references_block_and_both(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    gateway = await make_gateway(cited_crs(mock_llm, engines, "references"))
    await mock_llm.script({"content": CITED})
    _, answer = await post(gateway, ask(web_search_options={}))
    message = answer["choices"][0]["message"]
    assert "annotations" not in message
    assert message["content"] == CITED + (
        "\n\nSources:\n[1] Match report: https://news.example/report\n[2] Score: https://scores.example/1\n"
        "[3] Highlights: https://video.example/h"
    )

    both = await make_gateway(cited_crs(mock_llm, engines, "both"))
    await mock_llm.script({"content": "No markers here.", "chunks": 3})
    _, events = await post(both, ask(web_search_options={}, stream=True))
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.startswith("No markers here.\n\nSources:\n[1] Match report")  # none cited: every result listed
    assert not any(c["choices"][0]["delta"].get("annotations") for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_messages_callers_get_anthropic_citations(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    gateway = await make_gateway(cited_crs(mock_llm, engines, "annotations", enabled="always"))
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="sk-alice", max_retries=0)
    await mock_llm.script({"content": CITED})
    message = await client.messages.create(
        model="mock-gpt", max_tokens=64, messages=[{"role": "user", "content": "Who won?"}]
    )
    (block,) = message.content
    assert block.type == "text" and block.text == CITED
    assert [(c.type, getattr(c, "url", None), getattr(c, "title", None)) for c in block.citations or []] == [
        ("web_search_result_location", "https://news.example/report", "Match report"),
        ("web_search_result_location", "https://scores.example/1", "Score"),
        ("web_search_result_location", "https://news.example/report", "Match report"),
        ("web_search_result_location", "https://video.example/h", "Highlights"),
    ]
    await mock_llm.script({"content": CITED})  # one word per chunk
    async with client.messages.stream(
        model="mock-gpt", max_tokens=64, messages=[{"role": "user", "content": "Who won?"}]
    ) as stream:
        final = await stream.get_final_message()
    (block,) = final.content
    assert block.type == "text" and [getattr(c, "url", None) for c in block.citations or []] == [
        "https://news.example/report",
        "https://scores.example/1",
        "https://news.example/report",
        "https://video.example/h",
    ]


async def test_the_responses_hosted_web_search_tool_reaches_the_stage(
    make_gateway: GatewayFactory,
    mock_llm: MockLLM,
    engines: dict[str, MockEngine],
    access_log: list[dict[str, Any]],
) -> None:
    """What agents send (the hosted tool, a location) is searched by the route's stage; the citations come back
    as Responses url_citation annotations, whole and streamed, and the tool is not counted as dropped."""
    gateway = await make_gateway(cited_crs(mock_llm, engines, "annotations"))
    dropped = sample("tollway_responses_dropped_total", kind="tool", type="web_search")
    tool = {
        "type": "web_search",
        "search_context_size": "low",
        "user_location": {"type": "approximate", "city": "Paris"},
    }
    body = {"model": "mock-gpt", "input": "Who won the match yesterday?", "tools": [tool], "store": False}
    await mock_llm.script({"content": CITED})
    async with gateway.post("/v1/responses", body) as response:
        assert response.status == 200
        answer = await response.json()
    assert_response(answer)
    assert engines["searxng"].queries == ["Who won the match yesterday?"]
    (sent,) = await chat_requests(mock_llm)
    assert "web_search_options" not in sent["body"] and "tools" not in sent["body"]
    assert "Match report" in sent["body"]["messages"][0]["content"]  # grounded by the stage's system message
    (part,) = answer["output"][0]["content"]
    assert part["text"] == CITED
    assert part["annotations"] == [{"type": "url_citation", **a["url_citation"]} for a in expected_annotations(CITED)]
    assert access_log[-1]["ai_log"]["responses"] == {"web_search": "stage"}

    await mock_llm.script({"content": CITED})  # one word per chunk
    async with gateway.post("/v1/responses", {**body, "stream": True}) as response:
        raw = await response.read()
    events = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert_events(events)
    added = [e for e in events if e["type"] == "response.output_text.annotation.added"]
    assert [e["annotation_index"] for e in added] == [0, 1, 2, 3]
    final = events[-1]["response"]
    assert final["output"][0]["content"][0]["annotations"] == [e["annotation"] for e in added]
    text = final["output"][0]["content"][0]["text"]
    assert [text[a["start_index"] : a["end_index"]] for a in (e["annotation"] for e in added)] == [
        "[1]",
        "[2]",
        "[1]",
        "[3]",
    ]
    assert sample("tollway_responses_dropped_total", kind="tool", type="web_search") == dropped


async def test_a_marker_split_across_chunks_is_still_found() -> None:
    results = [SearchResult("A", "https://a.example", "a", "e"), SearchResult("B", "https://b.example", "b", "e")]
    chain = CitationsFilter(results, "annotations", "default/chat")
    chain.start(Answer(stream=None))

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body = {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(body) + b"\n\n"

    out = await chain.feed([chunk({"role": "assistant", "content": ""}), chunk({"content": "See ["})])
    out += await chain.feed([chunk({"content": "2"}), chunk({"content": "] and [1"})])
    assert len(out) == 4  # the text is never held back
    out += await chain.feed([chunk({"content": "]."}, "stop"), b"data: [DONE]\n\n"])
    payloads = [orjson.loads(e[6:]) for e in out[:-1]]
    assert [p["choices"][0]["delta"] for p in payloads[-3:]] == [
        {"content": "]."},
        {
            "annotations": [
                {
                    "type": "url_citation",
                    "url_citation": {"url": "https://b.example", "title": "B", "start_index": 4, "end_index": 7},
                },
                {
                    "type": "url_citation",
                    "url_citation": {"url": "https://a.example", "title": "A", "start_index": 12, "end_index": 15},
                },
            ]
        },
        {},
    ]
    assert payloads[-1]["choices"][0]["finish_reason"] == "stop" and payloads[-3]["choices"][0]["finish_reason"] is None
    assert out[-1] == b"data: [DONE]\n\n"


def test_merge_interleaves_by_rank_and_keeps_the_first_of_each_url() -> None:
    a = [SearchResult("a1", "https://x.example/1", "", "a"), SearchResult("a2", "https://x.example/2", "", "a")]
    b = [SearchResult("b1", "HTTPS://X.example/1/#top", "", "b"), SearchResult("b2", "https://y.example", "", "b")]
    assert [r.title for r in merge([a, b], 10)] == ["a1", "a2", "b2"]
    assert [r.title for r in merge([a, b], 2)] == ["a1", "a2"]


# -- web_search_options and the providers -------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["anthropic", "gemini", "openai-compatible", "azure-openai", "openai"])
async def test_the_option_reaches_only_openai_when_no_stage_searches(
    make_gateway: GatewayFactory, mock_llm: MockLLM, provider: str
) -> None:
    gateway = await make_gateway(search_crs(mock_llm, None, provider))
    status, _ = await post(gateway, ask(web_search_options={"search_context_size": "low"}))
    assert status == 200
    (request,) = await mock_llm.requests()
    assert ("web_search_options" in request["body"]) == (provider == "openai")


@pytest.mark.parametrize("provider", ["anthropic", "gemini", "openai"])
async def test_the_option_is_stripped_and_the_results_reach_every_provider(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine], provider: str
) -> None:
    gateway = await make_gateway(search_crs(mock_llm, {"engines": engine_spec(engines, "searxng")}, provider))
    status, _ = await post(gateway, ask(web_search_options={}))
    assert status == 200
    (request,) = await mock_llm.requests()
    body = request["body"]
    assert "web_search_options" not in body
    system = json.dumps(body.get("system") or body.get("systemInstruction") or body["messages"][0])
    assert "searxng first" in system


# -- the template -----------------------------------------------------------------------------------------------

CHINESE = """请根据下面的网络搜索结果回答问题，引用时在句末用方括号标注编号，例如 [1]。

当前时间：{date}

搜索结果：
{results}

问题：{question}"""  # noqa: RUF001 - Chinese punctuation
QUESTION = "北京今天天气怎么样？"  # noqa: RUF001
WEATHER = ("今日天气", "https://weather.example/bj", "北京今天晴，最高气温 5 度。")  # noqa: RUF001


async def test_a_chinese_template_with_a_local_time_zone(
    make_gateway: GatewayFactory, mock_llm: MockLLM, engines: dict[str, MockEngine]
) -> None:
    engines["quark"].serve(WEATHER)
    config = {
        "engines": engine_spec(engines, "quark"),
        "template": CHINESE,
        "timeZone": "Asia/Shanghai",
        "enabled": "always",
    }
    gateway = await make_gateway(search_crs(mock_llm, config))
    await mock_llm.script({"echo": True}, times=0, path="/chat/completions")
    _, answer = await post(gateway, ask(QUESTION))
    system = echoed(answer)["messages"][0]["content"]
    assert system.startswith("请根据下面的网络搜索结果回答问题")
    assert "[1] " + "\n".join(WEATHER) in system
    assert "Asia/Shanghai (UTC+08:00)" in system and system.endswith(QUESTION) and "问题" in system


# -- the compiler -----------------------------------------------------------------------------------------------


def docs(text: str) -> list[dict[str, Any]]:
    import yaml

    return [d for d in yaml.safe_load_all(textwrap.dedent(text)) if d]


def test_engine_secrets_become_ids_whose_values_travel_in_the_secrets_document() -> None:
    result = compile_crs(
        docs(SECRETS)
        + docs(
            """
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {name: small, namespace: default}
            spec: {provider: openai-compatible, baseURL: "http://127.0.0.1:1/v1"}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {name: chat, namespace: default}
            spec:
              rules: [{models: ["*"], backends: [{pool: small}]}]
              webSearch:
                engines:
                  - {type: google, credentials: {secretRef: {name: google-key}}}
                  - {type: tavily, name: tavily-alt, credentials: {secretRef: {name: tavily-key, key: apiKey}}}
                rewrite: {pool: small, model: tiny, timeout: 1500ms}
                timeout: 800ms
            """
        )
    )
    (route,) = result.config.routes
    search = route.rules[0].web_search
    assert search is not None and search.timeout == 0.8 and search.rewrite is not None
    assert search.rewrite.pool == "default/small" and search.rewrite.timeout == 1.5
    google, tavily = search.engines
    assert google.credentials == (("apiKey", "default/google-key/apiKey"), ("cx", "default/google-key/cx"))
    assert tavily.name == "tavily-alt" and tavily.credentials == (("apiKey", "default/tavily-key/apiKey"),)
    keys = dict(result.secrets.keys)
    assert keys["default/google-key/cx"] == "cx-test" and keys["default/tavily-key/apiKey"] == "tvly-test"
    assert "tvly-test" not in repr(result.config)
    status = next(s for ref, s in result.statuses.items() if ref.kind == "AIRoute")
    assert not status.unresolved and not status.invalid


def test_problems_name_the_field() -> None:
    result = compile_crs(
        docs(
            """
            apiVersion: tollway.dev/v1alpha1
            kind: ProviderKeyPool
            metadata: {name: small, namespace: default}
            spec: {provider: openai-compatible, baseURL: "http://127.0.0.1:1/v1"}
            ---
            apiVersion: v1
            kind: Secret
            metadata: {name: half, namespace: default}
            stringData: {apiKey: x}
            ---
            apiVersion: tollway.dev/v1alpha1
            kind: AIRoute
            metadata: {name: chat, namespace: default}
            spec:
              rules:
                - models: ["*"]
                  backends: [{pool: small}]
                  webSearch:
                    engines:
                      - {type: google, credentials: {secretRef: {name: half}}}
                      - {type: quark, credentials: {secretRef: {name: nowhere}}}
                    rewrite: {pool: missing, model: tiny}
                    template: "No results variable: {date} {bogus}"
            """
        )
    )
    status = next(s for ref, s in result.statuses.items() if ref.kind == "AIRoute")
    fails = "what uses it fails (its failurePolicy applies) until it resolves"
    assert sorted(status.unresolved) == [
        f"spec.rules[0].webSearch.engines[0].credentials.secretRef: secret 'half' has no key 'cx'; {fails}",
        f"spec.rules[0].webSearch.engines[1].credentials.secretRef: secret 'nowhere' not found; {fails}",
        f"spec.rules[0].webSearch.rewrite.pool: pool 'missing' not found; {fails}",
    ]
    assert any("spec.rules[0].webSearch.template: unknown variable {bogus}" in p for p in status.invalid)
