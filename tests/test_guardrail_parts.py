"""Guardrail parts on their own: PII detectors, rules, the guard-model parsers, the V3 signature, the answer view
and the stream window (fed a character at a time, so every mask straddles chunk boundaries)."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any

import orjson
import pytest
from fixtures.openresponses.schema import assert_events, assert_response
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tollway_contract.model import Checker, Guardrails, RulesSettings, WebhookSettings
from tollway_dataplane.answer import Answer
from tollway_dataplane.stages.base import EndStream
from tollway_dataplane.stages.guardrails import acs3, judge
from tollway_dataplane.stages.guardrails.detectors import CONDITIONS, DETECTORS, cn_id_check, luhn
from tollway_dataplane.stages.guardrails.respond import ResponseGuard
from tollway_dataplane.stages.guardrails.responses_view import ResponsesView
from tollway_dataplane.stages.guardrails.rules import RulesChecker
from tollway_dataplane.stages.guardrails.stream import StreamWindow
from tollway_dataplane.stages.guardrails.verdict import CheckContext, Ledger, Result
from tollway_dataplane.stages.guardrails.view import OpenAIView
from tollway_dataplane.stages.pipeline import FilterChain

# -- detectors -------------------------------------------------------------------------------------------------

VALID_ID = "11010519491231002X"  # the standard's own example number


def found(detector: str, text: str) -> list[str]:
    d = DETECTORS[detector]
    return [m.group() for m in d.pattern.finditer(text) if d.valid(m.group())]


def test_check_digits() -> None:
    assert luhn("4111 1111 1111 1111") and luhn("5500-0000-0000-0004")
    assert not luhn("4111 1111 1111 1112") and not luhn("1234")
    assert cn_id_check(VALID_ID) and cn_id_check(VALID_ID.lower())
    assert not cn_id_check("110105194912310021")


@pytest.mark.parametrize(
    ("detector", "text", "expected"),
    [
        ("email", "write to alice.smith+tag@mail.example.co.uk today", ["alice.smith+tag@mail.example.co.uk"]),
        (
            "phone",
            "手机 13800138000，或 +86 138-0013-8000，或 138 0013 8000",  # noqa: RUF001
            ["13800138000", "+86 138-0013-8000", "138 0013 8000"],
        ),
        ("phone", "call +1 415 555 2671 or (415) 555-2671", ["+1 415 555 2671", "(415) 555-2671"]),
        ("phone", "order 12800138000123 and version 1.2.3", []),
        ("credit-card", "card 4111 1111 1111 1111, not 4111 1111 1111 1112", ["4111 1111 1111 1111"]),
        ("cn-id-card", f"身份证 {VALID_ID} 与 110105194912310021", [VALID_ID]),
        ("ipv4", "from 10.0.0.1 and 256.1.1.1 and 1.2.3.4.5", ["10.0.0.1"]),
        (
            "api-key",
            "key sk-proj-abcdefghijklmnopqrstuv and AKIAABCDEFGHIJKLMNOP",
            ["sk-proj-abcdefghijklmnopqrstuv", "AKIAABCDEFGHIJKLMNOP"],
        ),
    ],
)
def test_detectors_find_what_they_name(detector: str, text: str, expected: list[str]) -> None:
    assert found(detector, text) == expected


# The e-mail pattern before it was anchored at the start of a run and made possessive (quadratic on long runs).
_UNANCHORED_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab1.-_+%@ x", max_size=60))
def test_the_linear_email_pattern_finds_what_the_unanchored_one_found(text: str) -> None:
    expected = [m.span() for m in _UNANCHORED_EMAIL.finditer(text)]
    assert [m.span() for m in DETECTORS["email"].pattern.finditer(text)] == expected


# Pieces whose concatenations make matches, near misses (16 digits, an @ without a domain) and Unicode digits.
DETECTOR_PARTS = (
    *(VALID_ID, "a@b.io", "x@y", "13800138000", "4111 1111 1111 1111", "10.0.0.1", "+1 415 555 2671"),
    *("sk-proj-abcdefghijklmnopqrstuv", "1234567890123456", "12345678", "@", ".", "1", "\u0663", "\uff11"),
    *(" ", "X", "a", "-"),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(DETECTOR_PARTS),
        max_size=12,
    )
)
def test_a_detector_matches_only_where_its_conditions_hold(parts: list[str]) -> None:
    text = "".join(parts)  # the conditions skip the expression: they must hold wherever it can match
    for detector in DETECTORS.values():
        if detector.pattern.search(text) is not None:
            assert all(CONDITIONS[c](text) for c in detector.needs), detector.name
    assert CONDITIONS["digits-17"](text) == (re.search(r"\d{17}", text) is not None)
    assert CONDITIONS["digit"](text) == (re.search(r"\d", text) is not None)


def rules(**settings: Any) -> RulesChecker:
    action = settings.pop("action", "mask")
    return RulesChecker(Checker(name="r", type="rules", settings=RulesSettings(**settings), action=action))


def test_rules_mask_with_placeholders_and_prefer_detectors() -> None:
    checker = rules(detectors=("email", "phone", "credit-card", "cn-id-card"), patterns=(r"secret-\w+",))
    text = f"mail a@b.io, card 4111-1111-1111-1111, id {VALID_ID}, phone 13800138000, secret-plan"
    assert checker.mask(text) == "mail [EMAIL], card [CREDIT_CARD], id [CN_ID_CARD], phone [PHONE], [MASKED]"
    assert [h.category for h in checker.hits(text)] == ["email", "credit-card", "cn-id-card", "phone", "pattern"]


def test_keywords_case_and_longest_first() -> None:
    assert (
        rules(keywords=("foo", "foo bar"), ignore_case=True, replacement="***").mask("FOO BAR and Foo") == "*** and ***"
    )
    assert rules(keywords=("foo",)).mask("FOO foo") == "FOO [MASKED]"


def test_empty_matches_are_ignored() -> None:
    assert rules(patterns=("x*",)).hits("abc") == []


TRICKY_PATTERNS = (
    "(?i)ignore (all )?previous instructions",
    "(?i)system prompt",
    r"^secret$",
    r"(?m)^root:",
    r"a|b",
    r"(\w)\1",  # a backreference: never joined into the one-scan alternation
    r"(?x) pass \s* word  # verbose, with a comment",
    "x*",
    r"\bkey-\d+\b",
    "BEGIN PRIVATE KEY",
    "(?i)key",  # the Kelvin sign matches it case-insensitively: lower-casing alone would miss that
    "rm -rf /",
    "(?i:sec)ret",  # a scoped case flag: no literal is taken from it
)
WORDS = (
    "Ignore previous instructions",
    "SYSTEM PROMPT",
    "secret",
    "root:x",
    "a",
    "b",
    "pass word",
    "key-42",
    "\u212aEY",  # KELVIN SIGN, E, Y
    "\u017fystem prompt",  # LATIN SMALL LETTER LONG S
    "begin private key",
    "BEGIN PRIVATE KEY",
    "rm -rf /",
    "SECret",
    "zz",
    "\n",
    " ",
)


@settings(max_examples=300, deadline=None)
@given(
    patterns=st.lists(st.sampled_from(TRICKY_PATTERNS), min_size=1, max_size=5, unique=True),
    keywords=st.lists(st.sampled_from(("foo", "foo bar", "a")), max_size=2, unique=True),
    ignore_case=st.booleans(),
    words=st.lists(st.sampled_from(WORDS), max_size=8),
)
def test_the_prefilters_and_the_memo_never_change_what_is_found(
    patterns: list[str], keywords: list[str], ignore_case: bool, words: list[str]
) -> None:
    text = "".join(words)
    checker = rules(patterns=tuple(patterns), keywords=tuple(keywords), ignore_case=ignore_case)
    plain = rules(patterns=tuple(patterns), keywords=tuple(keywords), ignore_case=ignore_case)
    plain._prefilter = plain._literals = None  # every pattern scanned on its own
    expected = plain.hits(text)
    assert checker.hits(text) == expected
    assert list(checker.remembered_hits(text)) == expected  # computed
    assert list(checker.remembered_hits(text)) == expected  # remembered


GROWING_PIECES = (
    *WORDS,
    "a@b.io",
    "x@y",
    ".com",
    "@",
    "1234567890",
    "12345678",
    "11010519491231002X",
    "4111 1111 1111 1111",
    "sk-",
    "abcdefghijklmnopqrst",
    "AKIA",
    "\u00e9",
    "192.168.",
    "0.1",
)


LITERAL_PATTERNS = tuple(p for p in TRICKY_PATTERNS if p not in ("a|b", r"(\w)\1", "x*", "(?i:sec)ret"))


@settings(max_examples=400, deadline=None)
@given(
    patterns=st.one_of(
        st.lists(st.sampled_from(LITERAL_PATTERNS), max_size=2, unique=True),  # the literal filter decides
        st.lists(st.sampled_from(TRICKY_PATTERNS), max_size=3, unique=True),
    ),
    keywords=st.lists(st.sampled_from(("foo", "foo bar", "a")), max_size=2, unique=True),
    detectors=st.lists(st.sampled_from(sorted(DETECTORS)), max_size=4, unique=True),
    ignore_case=st.booleans(),
    pieces=st.lists(st.sampled_from(GROWING_PIECES), max_size=14),
    batches=st.lists(st.tuples(st.integers(1, 12), st.integers(0, 30)), min_size=1, max_size=30),
)
# A literal, a key prefix and an ID number split between batches; text turning non-ASCII in a later batch.
@example(["(?i)system prompt"], [], [], False, ["SYSTEM PROMPT"], [(3, 0), (12, 0)])
@example([], [], ["api-key"], False, ["sk-", "abcdefghijklmnopqrst"], [(1, 0), (30, 0)])
@example([], [], ["cn-id-card"], False, ["1234", VALID_ID], [(10, 4), (30, 0)])
@example(["(?i)system prompt"], [], [], False, ["\u017fystem prompt"], [(1, 0), (30, 0)])
@example(["(?i)system prompt"], [], [], False, ["abcdefghijklmnopqrst", "SYSTEM PROMPT"], [(32, 0), (30, 0)])
# Non-ASCII text decided the second batch, so what it held was never searched for the literal: searched in full
# once the non-ASCII character is cut off.
@example(["(?i)system prompt"], [], [], False, ["abc", "\u00e9 system prompt", "x"], [(3, 0), (15, 4), (1, 0)])
def test_a_growing_scan_finds_exactly_what_a_full_scan_finds(
    patterns: list[str],
    keywords: list[str],
    detectors: list[str],
    ignore_case: bool,
    pieces: list[str],
    batches: list[tuple[int, int]],
) -> None:
    """A stream window's text: the answer arrives in batches of a few characters (splitting words, numbers and
    addresses), and text is cut off the front after a scan."""
    from tollway_dataplane.stages.guardrails.growing import GrowingScan

    answer = "".join(pieces)
    checker = rules(
        patterns=tuple(patterns), keywords=tuple(keywords), detectors=tuple(detectors), ignore_case=ignore_case
    )
    scan = GrowingScan(checker)
    text, fresh, position = "", 0, 0
    for size, cut in batches:
        text += answer[position : position + size]
        position += size
        assert scan.hits(text, fresh) == checker.hits(text), (text, fresh)
        cut = min(cut, len(text))
        text, fresh = text[cut:], len(text) - cut


def test_the_literal_prefilter_is_exact_on_case_folding_beyond_ascii() -> None:
    checker = rules(patterns=("(?i)system prompt", "BEGIN PRIVATE KEY"), keywords=("Foo",), ignore_case=True)
    assert checker.literals is not None  # every pattern has a word it must contain
    assert checker.hits("nothing to see") == []
    # The long s matches "s" case-insensitively: a non-ASCII text is never ruled out by lower-casing.
    assert [h.category for h in checker.hits("the \u017fystem prompt")] == ["pattern"]
    assert [h.category for h in checker.hits("FOO and begin private key")] == ["keyword", "pattern"]


def test_the_memo_is_bounded_and_skips_long_texts() -> None:
    from tollway_dataplane.stages.guardrails import rules as rules_module

    checker = rules(patterns=("secret", "token"))
    for i in range(rules_module.MEMO_ENTRIES + 10):
        checker.remembered_hits(f"text {i} secret")
    assert len(checker._memo) <= rules_module.MEMO_ENTRIES
    long_text = "secret " * rules_module.MEMO_TEXT_CHARS
    assert len(checker.remembered_hits(long_text)) == rules_module.MEMO_TEXT_CHARS
    assert long_text not in checker._memo


# -- guard-model parsers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "text", "verdict"),
    [
        ("llama-guard", "safe", ("safe", ())),
        ("llama-guard", "\n\nunsafe\nS1,S10", ("unsafe", ("S1", "S10"))),
        ("qwen3guard", "Safety: Unsafe\nCategories: Violent, PII", ("unsafe", ("Violent", "PII"))),
        (
            "qwen3guard",
            "Safety: Controversial\nCategories: Politically Sensitive Topics",
            ("controversial", ("Politically Sensitive Topics",)),
        ),
        ("qwen3guard", "Safety: Safe\nCategories: None\nRefusal: Yes", ("safe", ())),
        ("granite-guardian", "<think>hmm</think>\n<score> yes </score>", ("unsafe", ("risk",))),
        ("granite-guardian", "<score>no</score>", ("safe", ())),
        ("shieldgemma", "Yes", ("unsafe", ("policy",))),
        ("shieldgemma", "No.", ("safe", ())),
    ],
)
def test_parsers(fmt: str, text: str, verdict: tuple[str, tuple[str, ...]]) -> None:
    assert judge.PARSERS[fmt](text) == verdict


@pytest.mark.parametrize("fmt", sorted(judge.PARSERS))
def test_parsers_refuse_what_they_cannot_read(fmt: str) -> None:
    with pytest.raises(judge.Unparseable):
        judge.PARSERS[fmt]("I am not sure.")


# -- the V3 signature ------------------------------------------------------------------------------------------


def test_signature_follows_the_published_scheme() -> None:
    body = b"ServiceParameters=%7B%22content%22%3A%22hi%22%7D"
    headers = acs3.sign(
        method="POST",
        host="green-cip.cn-shanghai.aliyuncs.com",
        path="/",
        query={"Service": "llm_query_moderation"},
        body=body,
        content_type="application/x-www-form-urlencoded",
        action="TextModerationPlus",
        version="2022-03-02",
        access_key_id="AKID",
        access_key_secret="SECRET",
        security_token="TOKEN",
        now=1_700_000_000,
        nonce="n-1",
    )
    names = "content-type;host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;x-acs-version"
    canonical = "\n".join(
        [
            "POST",
            "/",
            "Service=llm_query_moderation",
            "content-type:application/x-www-form-urlencoded\n"
            "host:green-cip.cn-shanghai.aliyuncs.com\n"
            "x-acs-action:TextModerationPlus\n"
            f"x-acs-content-sha256:{hashlib.sha256(body).hexdigest()}\n"
            "x-acs-date:2023-11-14T22:13:20Z\n"
            "x-acs-security-token:TOKEN\n"
            "x-acs-signature-nonce:n-1\n"
            "x-acs-version:2022-03-02\n",
            names,
            hashlib.sha256(body).hexdigest(),
        ]
    )
    string_to_sign = "ACS3-HMAC-SHA256\n" + hashlib.sha256(canonical.encode()).hexdigest()
    signature = hmac.new(b"SECRET", string_to_sign.encode(), hashlib.sha256).hexdigest()
    assert headers["Authorization"] == f"ACS3-HMAC-SHA256 Credential=AKID,SignedHeaders={names},Signature={signature}"
    assert acs3.canonical_query({"b": "x y", "a": "~*"}) == "a=~%2A&b=x%20y"


# -- the answer view --------------------------------------------------------------------------------------------

VIEW = OpenAIView()


def chunk(text: str | None = None, finish: str | None = None, role: bool = False) -> bytes:
    delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
    if text is not None:
        delta["content"] = text
    data = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    data["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + orjson.dumps(data) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def test_view_reads_and_rewrites_events() -> None:
    assert VIEW.event_text(chunk("hi")) == "hi"
    assert VIEW.event_text(chunk(role=True)) is None and VIEW.event_text(DONE) is None
    assert VIEW.event_text(VIEW.with_event_text(chunk("hi"), "[EMAIL]")) == "[EMAIL]"
    assert VIEW.ends_answer(chunk(finish="stop")) and VIEW.ends_answer(DONE) and not VIEW.ends_answer(chunk("x"))
    end = VIEW.block_events(chunk("x"), "Blocked.")
    payload = orjson.loads(end[0][6:])
    assert payload["id"] == "c1" and payload["choices"][0] == {
        "index": 0,
        "delta": {"content": "Blocked."},
        "logprobs": None,
        "finish_reason": "content_filter",
    }
    assert end[1] == DONE


@given(
    st.lists(st.sampled_from([b"data:", b"data: ", b" ", b"{}", b"x", b"\n", b"\n\n", b"event: e", b":"]), max_size=8)
)
def test_the_one_line_event_shortcut_reads_what_the_line_parser_reads(parts: list[bytes]) -> None:
    from tollway_dataplane.sse import event_data

    event = b"".join(parts)
    lines = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
    assert event_data(event) == b"\n".join(lines)


def test_view_reads_whole_answers_and_legacy_completions() -> None:
    body = orjson.dumps(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": "a"}}, {"index": 1, "text": "b"}]}
    )
    assert VIEW.body_texts(body) == ["a", "b"]
    rewritten = orjson.loads(VIEW.rewrite_body(body, ["x", "y"]))
    assert rewritten["choices"][0]["message"]["content"] == "x" and rewritten["choices"][1]["text"] == "y"
    blocked = orjson.loads(VIEW.blocked_body(body, "No."))
    assert [c["finish_reason"] for c in blocked["choices"]] == ["content_filter"] * 2


# -- the Responses view: a native stream repeats its text -------------------------------------------------------


def responses_events(parts: list[str], *, framed: bool = True) -> list[bytes]:
    """A native Responses stream with one message of these text parts, a delta per character; `framed`: with the
    `event:` line the OpenAI API sends (some servers send only `data:`)."""
    events: list[dict[str, Any]] = []

    def add(kind: str, **fields: Any) -> None:
        events.append({"type": kind, "sequence_number": len(events), **fields})

    response = {
        "id": "resp_1",
        "object": "response",
        "created_at": 1,
        "completed_at": None,
        "status": "in_progress",
        "incomplete_details": None,
        "model": "m",
        "previous_response_id": None,
        "instructions": None,
        "output": [],
        "error": None,
        "tools": [],
        "tool_choice": "auto",
        "truncation": "disabled",
        "parallel_tool_calls": True,
        "text": {"format": {"type": "text"}},
        "top_p": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "top_logprobs": 0,
        "temperature": 1.0,
        "reasoning": None,
        "usage": None,
        "max_output_tokens": None,
        "max_tool_calls": None,
        "store": True,
        "background": False,
        "service_tier": "default",
        "metadata": {},
        "safety_identifier": None,
        "prompt_cache_key": None,
    }
    add("response.created", response=response)
    item = {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    add("response.output_item.added", output_index=0, item=item)
    done_parts = []
    for index, text in enumerate(parts):
        where = {"item_id": "msg_1", "output_index": 0, "content_index": index}
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        add("response.content_part.added", **where, part=part)
        for character in text:
            add("response.output_text.delta", **where, delta=character, logprobs=[])
        add("response.output_text.done", **where, text=text, logprobs=[])
        done_parts.append({**part, "text": text})
        add("response.content_part.done", **where, part=done_parts[-1])
    item = {**item, "status": "completed", "content": done_parts}
    add("response.output_item.done", output_index=0, item=item)
    add("response.completed", response={**response, "status": "completed", "completed_at": 2, "output": [item]})
    frame = (lambda e: b"event: " + e["type"].encode() + b"\n") if framed else (lambda e: b"")
    return [frame(e) + b"data: " + orjson.dumps(e) + b"\n\n" for e in events]


@pytest.mark.parametrize("framed", [True, False])
async def test_a_masked_responses_stream_repeats_what_its_deltas_said(framed: bool) -> None:
    config = Guardrails(checkers=(rules(detectors=("email",)).config,), stream_window=24)
    w = StreamWindow(config, ResponsesView(), [rules(detectors=("email",))], CONTEXT, ledger())
    upstream = responses_events(["Hello there.", "Mail alice@example.com today."], framed=framed)
    out = [e for event in upstream for e in await w.feed([event])] + await w.finish()
    payloads = [orjson.loads(e.split(b"data: ", 1)[1]) for e in out]
    assert_events(payloads)
    masked = "Mail [EMAIL] today."
    assert "".join(p["delta"] for p in payloads if p["type"] == "response.output_text.delta") == "Hello there." + masked
    assert [p["text"] for p in payloads if p["type"] == "response.output_text.done"] == ["Hello there.", masked]
    first_done = next(e for e in upstream if b"output_text.done" in e)
    assert first_done in out  # the part nobody masked goes out byte for byte
    (final,) = [p["response"] for p in payloads if p["type"] == "response.completed"]
    assert [part["text"] for part in final["output"][0]["content"]] == ["Hello there.", masked]
    (item,) = [p["item"] for p in payloads if p["type"] == "response.output_item.done"]
    assert [part["text"] for part in item["content"]] == ["Hello there.", masked]


async def test_a_responses_stream_blocked_before_anything_went_out_still_begins() -> None:
    upstream = responses_events(["forbidden"])
    stream = ResponsesView().stream()
    end = stream.block_events(upstream[0], "No.")
    payloads = [orjson.loads(e.split(b"data: ", 1)[1]) for e in end]
    assert_events(payloads)
    assert [payloads[0]["type"], payloads[-1]["type"]] == ["response.created", "response.incomplete"]
    assert payloads[-1]["response"]["id"] == "resp_1"
    assert payloads[-1]["response"]["output"][0]["content"][0]["text"] == "No."


async def test_a_blocked_responses_stream_closes_what_the_caller_saw_open() -> None:
    upstream = responses_events(["Hello there, friend."])
    stream = ResponsesView().stream()
    sent = [stream.sent(e, None) for e in upstream[:8]]  # created, item and part added, five deltas
    payloads = [orjson.loads(e.split(b"data: ", 1)[1]) for e in sent + stream.block_events(upstream[0], None)]
    assert_events(payloads)
    assert [p["type"] for p in payloads[8:]] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert payloads[8]["text"] == "Hello" and payloads[10]["item"]["status"] == "incomplete"
    final = payloads[-1]["response"]
    assert final["output"][0]["content"][0]["text"] == "Hello"
    assert final["incomplete_details"] == {"reason": "content_filter"}


def test_the_responses_view_reads_rewrites_and_blocks_whole_answers() -> None:
    body = orjson.loads(responses_events(["a", "b"])[-1].split(b"data: ", 1)[1])["response"]
    body["output"].insert(0, {"id": "fc_1", "type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"})
    raw = orjson.dumps(body)
    view = ResponsesView()
    assert view.body_texts(raw) == ["a", "b"]
    rewritten = orjson.loads(view.rewrite_body(raw, ["x", "y"]))
    assert [p["text"] for p in rewritten["output"][1]["content"]] == ["x", "y"]
    blocked = orjson.loads(view.blocked_body(raw, "No."))
    assert_response(blocked)
    assert (blocked["status"], blocked["incomplete_details"]["reason"]) == ("incomplete", "content_filter")
    assert [item["type"] for item in blocked["output"]] == ["message"]  # the unchecked tool call is gone too


# -- the stream window -----------------------------------------------------------------------------------------


def ledger() -> Ledger:
    return Ledger({}, "default/r", "default/alice")


CONTEXT = CheckContext(direction="response", request_id="r", consumer="default/alice", route="default/r", model="m")


def window(checkers: list[Any], size: int = 8, on_block: str = "error") -> StreamWindow:
    config = Guardrails(checkers=tuple(c.config for c in checkers), stream_window=size, on_block=on_block)
    return StreamWindow(config, VIEW, checkers, CONTEXT, ledger())


def texts(events: list[bytes]) -> str:
    return "".join(VIEW.event_text(e) or "" for e in events)


async def run(w: StreamWindow, pieces: list[str]) -> tuple[list[list[bytes]], list[bytes]]:
    """Feed a role chunk, each piece as its own event and batch, then the finish and [DONE]."""
    batches = [await w.feed([chunk(role=True)])]
    for piece in pieces:
        batches.append(await w.feed([chunk(piece)]))
    batches.append(await w.feed([chunk(finish="stop"), DONE]))
    return batches, [e for b in batches for e in b] + await w.finish()


@pytest.mark.parametrize("size", [20, 64, 256])
async def test_masks_straddling_every_chunk_boundary_never_leak(size: int) -> None:
    """The window only has to be longer than the longest span to mask (here 19 characters)."""
    text = "mail alice@example.com or 4111 1111 1111 1111 bye"
    w = window([rules(detectors=("email", "credit-card"))], size=size)
    batches, everything = await run(w, list(text))  # one character per event
    assert texts(everything) == "mail [EMAIL] or [CREDIT_CARD] bye"
    released_so_far = ""
    for batch in batches:
        released_so_far += texts(batch)
        assert "@" not in released_so_far and "4111" not in released_so_far
    assert everything[0] == chunk(role=True)  # the role goes out at once, byte for byte
    assert everything[-1] == DONE


async def test_text_is_held_until_a_window_follows_it() -> None:
    w = window([rules(keywords=("never",))], size=10)
    assert texts(await w.feed([chunk(role=True), chunk("abcde")])) == ""
    assert texts(await w.feed([chunk("fghij")])) == ""  # 10 chars held: "abcde" has only 5 after it
    assert texts(await w.feed([chunk("klmno")])) == "abcde"
    assert texts(await w.feed([chunk(finish="stop"), DONE])) == "fghijklmno"


async def test_a_block_ends_with_content_filter_and_done_and_hides_the_window() -> None:
    w = window([rules(keywords=("forbidden",), action="block")], size=16, on_block="completion")
    shown = texts(await w.feed([chunk(role=True)] + [chunk(f"w{i} ") for i in range(100)]))
    with pytest.raises(EndStream) as end:
        await w.feed([chunk("forbidden")])
    events = end.value.events
    assert orjson.loads(events[0][6:])["choices"][0]["finish_reason"] == "content_filter"
    assert texts(events[:1]) == "This request was blocked by the content policy."  # completion mode shows it
    assert events[-1] == DONE and "forbidden" not in shown and shown.startswith("w0 ")


async def test_a_match_that_may_still_grow_is_held_even_past_the_window() -> None:
    w = window([rules(detectors=("email",))], size=2)
    out = await w.feed([chunk(role=True), chunk("x a@b.io"), chunk("zzzz")])
    assert "@" not in texts(out)  # "a@b.io" ends at the end of a batch: it may become "a@b.iozzzz"...
    rest = texts(await w.feed([chunk(" done"), chunk(finish="stop"), DONE]))
    assert texts(out) + rest == "x [EMAIL] done"


class SlowRewriter:
    """A remote checker that rewrites 'Alice' and blocks 'BOMB', answering only when released."""

    remote = True

    def __init__(self) -> None:
        self.config = Checker(name="hook", type="webhook", settings=WebhookSettings(url="http://x"))
        self.name = "hook"
        self.seen: list[str] = []
        self.gate: Any = None

    async def check(self, texts: list[str], context: CheckContext) -> Result:
        self.seen.append(texts[0])
        if self.gate is not None:
            await self.gate.wait()
        if "BOMB" in texts[0]:
            return Result(categories=("blocked",))
        if "Alice" in texts[0]:
            return Result(categories=("intervened",), texts=[texts[0].replace("Alice", "[PERSON]")])
        return Result()


async def test_remote_checks_a_window_at_a_time_and_text_waits_for_them() -> None:
    import asyncio

    hook = SlowRewriter()
    hook.gate = asyncio.Event()
    w = window([hook], size=8)
    out = await w.feed([chunk(role=True), chunk("Hi Alice, "), chunk("how are you")])
    for _ in range(100):  # let the check start
        if hook.seen:
            break
        await asyncio.sleep(0)
    assert texts(out) == "" and hook.seen == ["Hi Alice, how are you"]  # one call in flight
    out += await w.feed([chunk(" today")])
    assert len(hook.seen) == 1  # still one call in flight; " today" waits for the next window
    hook.gate.set()
    out += await w.feed([chunk(finish="stop"), DONE])
    assert texts(out) == "Hi [PERSON], how are you today" and hook.seen[1] == " today"


async def test_remote_block_in_a_later_window() -> None:
    hook = SlowRewriter()
    w = window([hook], size=4)
    await w.feed([chunk(role=True), chunk("fine text ")])
    with pytest.raises(EndStream):
        await w.feed([chunk("BOMB"), chunk(finish="stop"), DONE])


async def test_an_unknown_dialect_fails_closed_and_open_passes_counted() -> None:
    from tollway_dataplane.stages.guardrails.reply import GuardrailBlocked

    checker = rules(keywords=("x",), action="block")
    for policy in ("closed", "open"):
        notes: dict[str, Any] = {}
        config = Guardrails(checkers=(checker.config,), failure_policy=policy)
        guard = ResponseGuard(config, [checker], CONTEXT, Ledger(notes, "r", "c"))
        chain = FilterChain([guard], Answer(body=b"{}", dialect="a-dialect-from-the-future"))
        if policy == "closed":
            with pytest.raises(GuardrailBlocked):
                await chain.body(b'{"content": [{"type": "text", "text": "x"}]}')
        else:
            assert await chain.body(b"{}") == b"{}"
        chain.close(True)
        (check,) = notes["guardrail"]["checks"]
        assert check["errors"] == ["unsupported-dialect"]
        assert check["action"] == ("block" if policy == "closed" else "pass")


async def test_two_servers_rewriting_the_same_text_differently_block() -> None:
    from tollway_dataplane.stages.guardrails.evaluate import evaluate

    class Rewriter(SlowRewriter):
        def __init__(self, name: str, replacement: str):
            super().__init__()
            self.name = name
            self.config = Checker(name=name, type="webhook", settings=WebhookSettings(url="http://x"))
            self.replacement = replacement

        async def check(self, texts: list[str], context: CheckContext) -> Result:
            return Result(categories=("intervened",), texts=[t.replace("Alice", self.replacement) for t in texts])

    texts = ["Hi Alice"]
    same = await evaluate(
        [Rewriter("a", "[P]"), Rewriter("b", "[P]")],
        [texts, texts],
        CONTEXT,
        time_limit=1,
        failure_policy="open",
        ledger=ledger(),
    )
    assert same.blocked is None and [t for _, t in same.rewrites] == [["Hi [P]"], ["Hi [P]"]]
    differ = await evaluate(
        [Rewriter("a", "[P]"), Rewriter("b", "[NAME]")],
        [texts, texts],
        CONTEXT,
        time_limit=1,
        failure_policy="open",
        ledger=ledger(),
    )
    assert differ.blocked is not None and differ.blocked.categories == ("conflicting-rewrites",)


async def test_text_a_webhook_rewrote_is_read_whole_by_the_rules() -> None:
    """The rules knew the text they had read held no '@'; the rewrite put one in the middle of it."""

    class Mailer(SlowRewriter):
        async def check(self, texts: list[str], context: CheckContext) -> Result:
            if "Alice" not in texts[0]:
                return Result()
            return Result(categories=("intervened",), texts=[texts[0].replace("Alice", "alice@example.com")])

    w = window([Mailer(), rules(detectors=("email",))], size=8)
    out = await w.feed([chunk(role=True), chunk("Hi Alice, "), chunk("how are you")])
    out += await w.feed([chunk(finish="stop"), DONE])
    assert texts(out) == "Hi [EMAIL], how are you"
