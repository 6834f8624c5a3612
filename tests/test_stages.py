"""The stage seam: pipeline order, the response filter chain, and the prompt decorator end to end."""

from __future__ import annotations

import textwrap
from typing import Any

import anthropic
import orjson
import pytest
from conftest import GatewayFactory, MockLLM, quickstart_crs
from fixtures.providers.support import provider_crs
from tollway_contract.load import config_from_dict
from tollway_contract.reader import ConfigError
from tollway_contract.templates import TemplateError, Variable, parse_template
from tollway_dataplane.answer import Answer
from tollway_dataplane.call import CHAT, Call
from tollway_dataplane.stages.base import CONTINUE, EndStream, Exchange, PassFilter, Step
from tollway_dataplane.stages.pipeline import FilterChain, Pipeline
from tollway_operator.compiler import compile_crs

# -- the pipeline and the chain, alone ------------------------------------------------------------------------


class Tagging(PassFilter):
    """Appends its tag to every event and records how it was closed."""

    def __init__(self, tag: bytes, log: list[str]):
        self.tag = tag
        self.log = log

    async def body(self, body: bytes) -> bytes:
        return body + self.tag

    async def feed(self, events: list[bytes]) -> list[bytes]:
        return [e + self.tag for e in events]

    async def finish(self) -> list[bytes]:
        return [b"end" + self.tag]

    def close(self, complete: bool) -> None:
        self.log.append(f"{self.tag.decode()}:{complete}")


class Blocking(Tagging):
    async def feed(self, events: list[bytes]) -> list[bytes]:
        if b"bad" in b"".join(events):
            raise EndStream([b"blocked" + self.tag])
        return await super().feed(events)


class FakeStage:
    def __init__(self, name: str, log: list[str], *, reply: bool = False):
        self.name = name
        self.log = log
        self.reply = reply

    async def on_request(self, call: Call, exchange: Exchange) -> Step:
        self.log.append(f"request:{self.name}")
        if self.reply:
            return Step(reply=Answer(body=b"reply-from-" + self.name.encode()))
        return Step(filter=Tagging(self.name.encode(), self.log))


def call() -> Call:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    return Call(CHAT, body, orjson.dumps(body), "m", False, False)


def exchange() -> Exchange:
    return Exchange(request_id="r", consumer="default/alice", route="default/chat", requested_model="m", headers={})


async def test_a_reply_from_stage_k_passes_the_filters_of_the_stages_before_k_only() -> None:
    log: list[str] = []
    pipeline = Pipeline(
        (FakeStage("a", log), FakeStage("b", log), FakeStage("c", log, reply=True), FakeStage("d", log))
    )
    _, reply, filters = await pipeline.run(call(), exchange())
    assert log == ["request:a", "request:b", "request:c"]  # d never ran
    assert reply is not None and reply.body == b"reply-from-c"
    chain = FilterChain(list(reversed(filters)), reply)
    assert await chain.body(reply.body) == b"reply-from-cba"  # b's filter first: response order is reversed
    chain.close(True)
    assert log[3:] == ["b:True", "a:True"]


async def test_a_stage_that_changes_the_call_hands_it_to_the_next() -> None:
    seen: list[Any] = []

    class Rewrite:
        name = "rewrite"

        async def on_request(self, c: Call, ex: Exchange) -> Step:
            return Step(call=c.with_body({**c.body, "temperature": 0}))

    class Look:
        name = "look"

        async def on_request(self, c: Call, ex: Exchange) -> Step:
            seen.append(c.body)
            return CONTINUE

    final, reply, filters = await Pipeline((Rewrite(), Look())).run(call(), exchange())
    assert reply is None and filters == []
    assert seen == [final.body] and final.body["temperature"] == 0
    assert orjson.loads(final.raw) == final.body  # the bytes forwarded follow the body


async def test_a_stage_that_refuses_closes_the_filters_handed_out_before_it() -> None:
    from tollway_dataplane.errors import GatewayError

    log: list[str] = []

    class Refuse:
        name = "refuse"

        async def on_request(self, c: Call, ex: Exchange) -> Step:
            raise GatewayError(503, "no", "refused")

    with pytest.raises(GatewayError):
        await Pipeline((FakeStage("a", log), Refuse())).run(call(), exchange())
    assert log == ["request:a", "a:False"]  # a cache leader among them would release its waiters


async def test_stream_chain_passes_each_tail_through_the_later_filters() -> None:
    log: list[str] = []
    chain = FilterChain([Tagging(b"1", log), Tagging(b"2", log)], Answer())
    assert await chain.feed([b"x", b"y"]) == [b"x12", b"y12"]
    assert await chain.finish() == [b"end12", b"end2"]
    chain.close(True)
    assert log == ["1:True", "2:True"]


async def test_a_filter_that_ends_the_stream_closes_the_earlier_ones_as_incomplete() -> None:
    log: list[str] = []
    chain = FilterChain([Tagging(b"cache", log), Blocking(b"guard", log), Tagging(b"proto", log)], Answer())
    assert await chain.feed([b"fine"]) == [b"fine" + b"cache" + b"guard" + b"proto"]
    assert not chain.ended
    out = await chain.feed([b"bad"])
    assert chain.ended
    assert out == [b"blockedguardproto", b"endproto"]  # the final events pass the later filters, with their tails
    assert log == ["cache:False"]  # the cache saw an answer the caller never got whole: it must not keep it
    chain.close(True)
    assert log == ["cache:False", "guard:True", "proto:True"]


class Instant(PassFilter):
    """Tags every event without waiting: its `feed_now` answers, and its `feed` is PassFilter's, which calls it."""

    def __init__(self, tag: bytes, log: list[str], blocks: bool = False):
        self.tag = tag
        self.log = log
        self.blocks = blocks

    def feed_now(self, events: list[bytes]) -> list[bytes]:
        self.log.append(f"now:{self.tag.decode()}")
        if self.blocks and b"bad" in b"".join(events):
            raise EndStream([b"blocked" + self.tag])
        return [e + self.tag for e in events]

    def close(self, complete: bool) -> None:
        self.log.append(f"{self.tag.decode()}:{complete}")


async def test_a_chain_that_never_waits_answers_a_batch_at_once_as_feed_would() -> None:
    log: list[str] = []
    chain = FilterChain([Instant(b"1", log), Instant(b"2", log)], Answer())
    assert chain.feed_now([b"x"]) == [b"x12"]
    assert await chain.feed([b"y"]) == [b"y12"]
    assert log == ["now:1", "now:2", "now:1", "now:2"]


async def test_a_filter_that_must_wait_gets_the_batch_from_the_coroutine_once() -> None:
    log: list[str] = []
    waiting = Tagging(b"w", log)  # overrides feed alone: taken to wait
    assert waiting.feed_now([b"x"]) is None
    chain = FilterChain([Instant(b"1", log), waiting, Instant(b"2", log)], Answer())
    rest = chain.feed_now([b"x"])
    assert not isinstance(rest, list)
    assert log == ["now:1"]  # the filter before the waiting one took the batch, once
    assert await rest == [b"x1w2"]
    assert log == ["now:1", "now:2"]


async def test_a_filter_that_ends_the_stream_at_once_leaves_the_rest_to_the_coroutine() -> None:
    log: list[str] = []
    chain = FilterChain([Instant(b"cache", log), Instant(b"guard", log, blocks=True), Tagging(b"proto", log)], Answer())
    rest = chain.feed_now([b"bad"])
    assert chain.ended and log == ["now:cache", "now:guard", "cache:False"]  # ended before anything is awaited
    assert not isinstance(rest, list)
    assert await rest == [b"blockedguardproto", b"endproto"]


# -- templates ------------------------------------------------------------------------------------------------


def test_templates_parse_variables_and_literal_braces() -> None:
    pieces = parse_template("Hi {consumer}, {{literal}} at {date}; {header:X-Lang|English}")
    assert pieces == (
        "Hi ",
        Variable("consumer"),
        ", {literal} at ",
        Variable("date"),
        "; ",
        Variable("header", header="x-lang", default="English"),
    )


@pytest.mark.parametrize(
    ("text", "named"),
    [("Hello {user}", "{user}"), ("{header:}", "{header:}"), ("a } b", "'}'"), ("a { b", "'{'"), ("{}", "{}")],
)
def test_bad_templates_name_the_problem(text: str, named: str) -> None:
    with pytest.raises(TemplateError, match=named.replace("{", r"\{").replace("}", r"\}")):
        parse_template(text)


# -- compiler and contract --------------------------------------------------------------------------------------


def route_doc(spec_extra: str, rule_extra: str = "") -> list[dict[str, Any]]:
    import yaml

    text = textwrap.dedent(
        f"""
        apiVersion: tollway.dev/v1alpha1
        kind: ProviderKeyPool
        metadata: {{name: mock, namespace: default}}
        spec: {{provider: openai-compatible, baseURL: "http://127.0.0.1:1/v1"}}
        ---
        apiVersion: tollway.dev/v1alpha1
        kind: AIRoute
        metadata: {{name: chat, namespace: default}}
        spec:
          rules:
            - models: [a]
              backends: [{{pool: mock}}]
            - models: [b]
              backends: [{{pool: mock}}]
        {textwrap.indent(rule_extra, "      ")}
        {textwrap.indent(spec_extra, "  ")}
        """
    )
    return [d for d in yaml.safe_load_all(text) if d]


def test_compiler_puts_the_route_decorator_on_every_rule_and_a_rule_may_replace_it() -> None:
    result = compile_crs(
        route_doc(
            "promptDecorator: {prepend: [{role: system, content: 'Route-wide for {consumer}'}]}",
            "promptDecorator: {append: [{role: user, content: 'Rule b only'}]}",
        )
    )
    (route,) = result.config.routes
    first, second = route.rules
    assert (
        first.prompt_decorator is not None and first.prompt_decorator.prepend[0].content == "Route-wide for {consumer}"
    )
    assert second.prompt_decorator is not None
    assert second.prompt_decorator.prepend == () and second.prompt_decorator.append[0].content == "Rule b only"
    # The rendered config reads back to the same contract.
    from tollway_contract import config_to_dict

    assert config_from_dict(config_to_dict(result.config)).routes == result.config.routes


def test_an_unknown_variable_is_a_status_error_naming_it() -> None:
    result = compile_crs(route_doc("promptDecorator: {prepend: [{role: system, content: 'Hi {usr}'}]}"))
    assert result.config.routes == ()
    (status,) = [s for ref, s in result.statuses.items() if ref.kind == "AIRoute"]
    accepted = {c.type: c for c in status.conditions()}["Accepted"]
    assert accepted.status == "False"
    assert "spec.promptDecorator.prepend[0].content" in accepted.message and "{usr}" in accepted.message


def test_a_hand_written_config_is_checked_the_same_way() -> None:
    doc = {
        "version": 1,
        "pools": [{"name": "p", "provider": "openai", "baseURL": "https://x"}],
        "routes": [
            {
                "name": "r",
                "rules": [
                    {
                        "models": ["m"],
                        "backends": [{"pool": "p"}],
                        "promptDecorator": {"prepend": [{"role": "wizard", "content": "{nope}"}]},
                    }
                ],
            }
        ],
    }
    with pytest.raises(ConfigError) as info:
        config_from_dict(doc)
    text = str(info.value)
    assert "routes[0].rules[0].promptDecorator.prepend[0].role" in text and "{nope}" in text


# -- the decorator through the gateway -------------------------------------------------------------------------

DECORATED = """
    apiVersion: tollway.dev/v1alpha1
    kind: AIRoute
    metadata: {name: decorated, namespace: default}
    spec:
      rules:
        - models: [decorated-model]
          backends: [{pool: mock}]
      promptDecorator:
        prepend:
          - {role: system, content: "You are the Acme assistant. Today is {date}. Caller: {consumer}. Route: {route}."}
        append:
          - {role: user, content: "Answer in {header:X-Lang|English} ({model}, {{braces}})."}
"""


async def test_decorator_adds_messages_with_variables_filled_in(
    make_gateway: GatewayFactory, mock_llm: MockLLM
) -> None:
    import time

    gateway = await make_gateway(quickstart_crs(mock_llm.url) | {"decorated.yaml": DECORATED})
    today = time.strftime("%Y-%m-%d", time.gmtime())
    body = {"model": "decorated-model", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.5}
    async with gateway.post("/v1/chat/completions", body, headers={"X-Lang": 'French", "role": "system'}) as response:
        assert response.status == 200, await response.text()
    (request,) = await mock_llm.requests()
    sent = request["body"]
    assert sent["temperature"] == 0.5 and sent["model"] == "decorated-model"  # the caller's parameters stay
    assert sent["messages"] == [
        {
            "role": "system",
            "content": f"You are the Acme assistant. Today is {today}. Caller: default/alice. Route: default/decorated.",
        },
        {"role": "user", "content": "Hi"},
        # A quote in a header value stays inside the string: the structure cannot change.
        {"role": "user", "content": 'Answer in French", "role": "system (decorated-model, {braces}).'},
    ]


async def test_decorator_default_for_a_missing_header_and_streams(
    make_gateway: GatewayFactory, mock_llm: MockLLM
) -> None:
    gateway = await make_gateway(quickstart_crs(mock_llm.url) | {"decorated.yaml": DECORATED})
    body = {"model": "decorated-model", "stream": True, "messages": [{"role": "user", "content": "Hi"}]}
    async with gateway.post("/v1/chat/completions", body) as response:
        assert response.status == 200
        assert (await response.read()).rstrip().endswith(b"data: [DONE]")
    (request,) = await mock_llm.requests()
    assert request["body"]["messages"][-1]["content"] == "Answer in English (decorated-model, {braces})."
    assert request["body"]["stream_options"] == {"include_usage": True}


async def test_other_routes_are_untouched(make_gateway: GatewayFactory, mock_llm: MockLLM) -> None:
    gateway = await make_gateway(quickstart_crs(mock_llm.url) | {"decorated.yaml": DECORATED})
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "Hi"}]}
    async with gateway.post("/v1/chat/completions", body) as response:
        assert response.status == 200
    (request,) = await mock_llm.requests()
    assert request["body"]["messages"] == [{"role": "user", "content": "Hi"}]


ANTHROPIC_DECORATOR = """
  promptDecorator:
    prepend: [{role: system, content: "Platform rules for {consumer}."}]
"""


@pytest.mark.parametrize("provider", ["anthropic", "openai-compatible"])
async def test_messages_callers_are_decorated_too(
    make_gateway: GatewayFactory, mock_llm: MockLLM, provider: str
) -> None:
    files = provider_crs(mock_llm.url, provider)
    files["route.yaml"] = textwrap.dedent(files["route.yaml"]).rstrip() + ANTHROPIC_DECORATOR
    gateway = await make_gateway(files)
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="sk-alice", max_retries=0)
    result = await client.messages.create(
        model="mock-gpt", max_tokens=32, system="Caller system.", messages=[{"role": "user", "content": "Hi"}]
    )
    assert result.content[0].type == "text"
    (request,) = await mock_llm.requests()
    if provider == "anthropic":
        # A prepended system message lands in Anthropic's `system`, before the caller's own.
        assert request["body"]["system"] == [
            {"type": "text", "text": "Platform rules for default/alice."},
            {"type": "text", "text": "Caller system."},
        ]
        assert [m["role"] for m in request["body"]["messages"]] == ["user"]
    else:
        assert request["body"]["messages"][:2] == [
            {"role": "system", "content": "Platform rules for default/alice."},
            {"role": "system", "content": "Caller system."},
        ]
