"""Property-based fuzzing of every endpoint against a real gateway process in front of a real mock LLM.

For any body, headers and method (see `strategies`), the gateway answers: never with a 5xx, always with JSON
carrying `error.message` when it refuses (Anthropic-shaped on /v1/messages), never with a byte of a credential,
never naming its server software, and it stays up. After the run its log holds no credential and no crash, and
the metrics' model label holds only names the config knows.

Reproducible: hypothesis is derandomized (the same inputs on every run) with a fixed budget per endpoint,
TOLLWAY_FUZZ_EXAMPLES (default 750). TOLLWAY_FUZZ_SEED=N explores other inputs instead (a failure then prints
the reproducing decorator); add whatever breaks the gateway to corpus.json.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    CONFIGURED_MODEL_LABELS,
    Stack,
    check_answer,
    check_log,
    figures,
    model_label_values,
    send,
    start_stack,
)
from hypothesis import HealthCheck, given, seed, settings
from strategies import PATHS, Request, raw_requests, requests

BUDGET = int(os.environ.get("TOLLWAY_FUZZ_EXAMPLES", "750"))
_SEED = os.environ.get("TOLLWAY_FUZZ_SEED")
FUZZ = settings(
    max_examples=BUDGET,
    derandomize=_SEED is None,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


def fuzz(test: Callable[..., Any]) -> Callable[..., Any]:
    test = FUZZ(test)
    return seed(int(_SEED))(test) if _SEED is not None else test


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(Path(tmp_path_factory.mktemp("fuzz")))
    figures.set("fuzz gateway rss kB before", running.rss_kb())
    yield running
    running.stop()
    figures.flush("fuzz")


def exchange(stack: Stack, request: Request) -> None:
    answer = send(stack.port, request.data, head=request.head)
    figures.add("fuzz inputs")
    figures.add(f"fuzz inputs {request.kind}")
    if answer is not None:
        figures.add(f"fuzz answers {answer.status // 100}xx")
    check_answer(answer, path=request.path, head=request.head)
    assert stack.alive(), "the gateway process died"


@pytest.mark.parametrize("kind", [*PATHS, "unknown"])
def test_any_request_gets_a_json_answer_and_no_5xx(stack: Stack, kind: str) -> None:
    @fuzz
    @given(request=requests(kind))
    def property(request: Request) -> None:
        exchange(stack, request)

    property()


def test_any_request_line_and_header_bytes(stack: Stack) -> None:
    """What the HTTP parser refuses is answered in JSON too, and the answer never repeats the request's bytes."""

    @fuzz
    @given(request=raw_requests())
    def property(request: Request) -> None:
        exchange(stack, request)

    property()


def test_after_the_run_the_log_is_clean_and_labels_are_bounded(stack: Stack) -> None:
    figures.set("fuzz gateway rss kB after", stack.rss_kb())
    check_log(stack)
    labels = model_label_values(stack.metrics())
    assert labels <= CONFIGURED_MODEL_LABELS, labels - CONFIGURED_MODEL_LABELS
