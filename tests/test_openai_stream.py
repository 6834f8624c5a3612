"""The OpenAI stream translator's scan of each event: when a stream counts as whole, and which usage it takes."""

from __future__ import annotations

import orjson
import pytest
from tollway_dataplane.answer import StreamInterrupted
from tollway_dataplane.providers.openai import OpenAIStream


def event(data: object, *, spaced: bool = False) -> bytes:
    text = orjson.dumps(data).decode()
    if spaced:  # the separators Python's json module writes, as some servers do
        text = text.replace('":', '": ').replace(",", ", ")
    return f"data: {text}\n\n".encode()


ABSENT = object()


def chunk(*finishes: str | None, content: str = "hi", usage: object = ABSENT, spaced: bool = False) -> bytes:
    choices = [{"index": i, "delta": {"content": content}, "finish_reason": f} for i, f in enumerate(finishes)]
    body: dict[str, object] = {"object": "chat.completion.chunk", "choices": choices}
    if usage is not ABSENT:
        body["usage"] = usage  # None: `"usage":null`, as some servers send on every chunk
    return event(body, spaced=spaced)


def whole(stream: OpenAIStream) -> bool:
    try:
        stream.finish()
    except StreamInterrupted:
        return False
    return True


@pytest.mark.parametrize("spaced", [False, True])
def test_a_finish_reason_on_any_choice_makes_the_stream_whole(spaced: bool) -> None:
    stream = OpenAIStream(wants_usage=False)
    stream.feed(chunk(None, None, spaced=spaced))
    assert not whole(stream)
    stream.feed(chunk(None, "stop", spaced=spaced))  # the second choice finishes first
    assert whole(stream)


def test_done_makes_the_stream_whole_but_the_words_in_content_do_not() -> None:
    stream = OpenAIStream(wants_usage=False)
    stream.feed(chunk(None, content="print('[DONE]')"))
    assert not whole(stream)
    stream.feed(b"data: [DONE]\n\n")
    assert whole(stream)


def test_a_usage_object_is_taken_and_a_null_one_is_not() -> None:
    stream = OpenAIStream(wants_usage=False)
    out = stream.feed(chunk(None) + chunk(None, usage=None))
    assert len(out) == 2 and stream.state.usage is None
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    only_usage = event({"object": "chat.completion.chunk", "choices": [], "usage": usage}, spaced=True)
    out = stream.feed(chunk("stop") + only_usage)
    assert stream.state.usage is not None
    assert (stream.state.usage.input_tokens, stream.state.usage.output_tokens) == (7, 3)
    assert out == [chunk("stop")]  # the caller did not ask for the usage chunk: it is hidden


def test_usage_riding_on_a_content_chunk_is_kept() -> None:
    usage = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    stream = OpenAIStream(wants_usage=False)
    riding = chunk("stop", usage=usage)
    assert stream.feed(riding) == [riding]
    assert stream.state.usage is not None and stream.state.usage.output_tokens == 3


def test_done_in_the_content_of_a_chunk_without_finish_reason_is_not_the_end() -> None:
    stream = OpenAIStream(wants_usage=False)
    stream.feed(event({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "[DONE]"}}]}))
    assert not whole(stream)
    stream.feed(b"event: done\ndata: [DONE]\n\n")  # the marker as its own event, whatever lines come with it
    assert whole(stream)
