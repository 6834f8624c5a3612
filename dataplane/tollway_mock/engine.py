"""A simulated inference server behind the mock's OpenAI generation endpoints, for balancing tests and benches.

Off by default (the mock then answers at once, as before, and only counts its requests). With `EngineSettings`
it behaves like one vLLM or SGLang replica, coarsely:

* `slots` sequences are served at once (vLLM's max_num_seqs); further requests wait in a FIFO queue.
* Prefill is compute-bound, so one prompt is prefilled at a time, taking `prefill_ms_per_token` per prompt token
  that is not in the prefix cache; a request's first event leaves when its prefill is done.
* The prefix cache holds the most recently used prompt blocks (256 characters, about 64 tokens, chained: a block
  counts only when every block before it is cached too), `cache_blocks` of them, least recently used evicted.
  Every request's blocks go in, its unique tail too, as on a real server.
* Decoding takes `decode_ms_per_token` per output token, in parallel across the slots.
* KV-cache use is the running sequences' prompt and output tokens over `kv_tokens` (or running / slots).

What it reports (`report`): queue, running and KV-cache use, which `/metrics` renders in vLLM's or SGLang's
names; the control API can pin any of them instead (`LoadReport`), for tests that script a server's load.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

BLOCK_CHARS = 256
CHARS_PER_TOKEN = 4


@dataclass(frozen=True, slots=True)
class EngineSettings:
    slots: int | None = None  # None: no limit and no queue
    prefill_ms_per_token: float = 0.0
    decode_ms_per_token: float = 0.0
    cache_blocks: int = 0
    kv_tokens: int = 0  # 0: KV-cache use is running / slots


@dataclass(frozen=True, slots=True)
class Admission:
    """What a request learned when it got a slot: how much of its prompt was cached, how fast it decodes."""

    prompt_tokens: int
    cached_tokens: int
    decode_ms_per_token: float


@dataclass(frozen=True, slots=True)
class Report:
    waiting: float
    running: float
    kv_cache_usage: float


class Engine:
    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()
        self.waiting = 0
        self.running = 0
        self._kv_in_use = 0
        self._slots = asyncio.Semaphore(self.settings.slots) if self.settings.slots else None
        self._prefill = asyncio.Lock()
        self._cache: OrderedDict[int, None] = OrderedDict()
        self.prompt_tokens = 0  # prompt tokens admitted, over the engine's life
        self.cache_hits = 0  # of which the prefix cache held

    @contextlib.asynccontextmanager
    async def serve(self, prompt: str, output_tokens: int) -> AsyncIterator[Admission]:
        """Hold a slot for one request: queue for it, prefill, then yield while the answer is written."""
        settings = self.settings
        if self._slots is not None:
            self.waiting += 1
            try:
                await self._slots.acquire()
            finally:
                self.waiting -= 1
        prompt_tokens = math.ceil(len(prompt) / CHARS_PER_TOKEN)
        held = prompt_tokens + output_tokens
        self.running += 1
        self._kv_in_use += held
        try:
            cached = min(prompt_tokens, self._cached_tokens(prompt))
            self.prompt_tokens += prompt_tokens
            self.cache_hits += cached
            prefill = (prompt_tokens - cached) * settings.prefill_ms_per_token
            if prefill > 0:
                async with self._prefill:
                    await asyncio.sleep(prefill / 1000)
            yield Admission(prompt_tokens, cached, settings.decode_ms_per_token)
        finally:
            self.running -= 1
            self._kv_in_use -= held
            if self._slots is not None:
                self._slots.release()

    def report(self) -> Report:
        settings = self.settings
        if settings.kv_tokens:
            kv = self._kv_in_use / settings.kv_tokens
        elif settings.slots:
            kv = self.running / settings.slots
        else:
            kv = 0.0
        return Report(float(self.waiting), float(self.running), min(1.0, kv))

    def _cached_tokens(self, prompt: str) -> int:
        """Tokens of the prompt's leading blocks already cached; puts all of its whole blocks in the cache."""
        capacity = self.settings.cache_blocks
        if not capacity:
            return 0
        blocks = [hash(prompt[:end]) for end in range(BLOCK_CHARS, len(prompt) + 1, BLOCK_CHARS)]
        hit = 0
        while hit < len(blocks) and blocks[hit] in self._cache:
            hit += 1
        for block in blocks:
            self._cache[block] = None
            self._cache.move_to_end(block)
        while len(self._cache) > capacity:
            self._cache.popitem(last=False)
        return hit * BLOCK_CHARS // CHARS_PER_TOKEN


@dataclass(slots=True)
class LoadReport:
    """Figures the control API pins in place of the engine's own (None: the engine's), and how /metrics fails."""

    format: str = "vllm"
    waiting: float | None = None
    running: float | None = None
    kv_cache_usage: float | None = None
    status: int = 200  # what /metrics answers with; not 200: an error body instead of metrics

    def figures(self, engine: Engine) -> Report:
        own = engine.report()
        return Report(
            own.waiting if self.waiting is None else self.waiting,
            own.running if self.running is None else self.running,
            own.kv_cache_usage if self.kv_cache_usage is None else self.kv_cache_usage,
        )
