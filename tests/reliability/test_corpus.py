"""Replays the regression corpus (corpus.json) against a real gateway process in front of a real mock LLM."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from corpus import Case, load
from harness import Stack, check_answer, check_log, figures, send, start_stack

CASES = load()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(Path(tmp_path_factory.mktemp("corpus")))
    yield running
    running.stop()
    figures.flush("corpus")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_corpus_entry(stack: Stack, case: Case) -> None:
    calls = stack.mock_calls()
    answer = send(stack.port, case.data)
    figures.add("corpus inputs")
    check_answer(answer, path=case.path)
    assert answer is not None and answer.status == case.expect, (case.what, answer.status, answer.body[:300])
    assert stack.alive()
    # A refused input is refused by the gateway itself: nothing of it reaches the upstream.
    assert stack.mock_calls() == calls + (1 if answer.status < 400 else 0)
    if case.id == "non-utf8-x-request-id":
        request_id = answer.header("x-request-id") or ""
        assert request_id.isascii() and "id-" not in request_id  # a fresh id, not the caller's bytes


def test_the_log_holds_no_credential_and_no_crash(stack: Stack) -> None:
    for case in CASES:  # in case this test runs alone
        send(stack.port, case.data)
    check_log(stack)
