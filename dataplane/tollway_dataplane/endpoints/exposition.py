"""The three figures a picker needs, read from a model server's Prometheus text exposition.

* vllm: `vllm:num_requests_waiting` (queue), `vllm:num_requests_running`, `vllm:kv_cache_usage_perc` (KV-cache
  use, 0..1; older servers: `vllm:gpu_cache_usage_perc`)
* sglang: `sglang:num_queue_reqs` (queue), `sglang:num_running_reqs`, `sglang:token_usage` (KV-cache use, 0..1)

A server reports one series per engine (data-parallel ranks) or model: queue and running are summed over them,
KV-cache use is the highest one. vLLM renamed its KV-cache gauge and later removed the old name; the current name
is read first and the old one only when the current one is absent, so neither a new nor an old server reads as an
empty cache. A body without the queue or the running count is not a usable scrape (`ExpositionError`); a missing
KV-cache figure reads as 0.

Only lines that start with a wanted name are parsed, with a prefix test done in C on the raw bytes: a vLLM
exposition holds hundreds of histogram lines, and this runs on the event loop that serves requests.
"""

from __future__ import annotations

import math

from .state import Load

# format -> (queue, running, KV-cache names in order of preference)
METRIC_NAMES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "vllm": (
        "vllm:num_requests_waiting",
        "vllm:num_requests_running",
        ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ),
    "sglang": ("sglang:num_queue_reqs", "sglang:num_running_reqs", ("sglang:token_usage",)),
}


class ExpositionError(ValueError):
    """The body does not carry the figures this format promises."""


def parse_load(format: str, body: bytes) -> Load:
    queue_name, running_name, kv_names = METRIC_NAMES[format]
    samples = samples_of(body, (queue_name, running_name, *kv_names))
    missing = [name for name in (queue_name, running_name) if not samples.get(name)]
    if missing:
        raise ExpositionError(f"no {' or '.join(missing)} in the metrics")
    kv = next((samples[name] for name in kv_names if samples.get(name)), [0.0])
    return Load(
        waiting=sum(samples[queue_name]), running=sum(samples[running_name]), kv_cache=min(1.0, max(0.0, max(kv)))
    )


def samples_of(body: bytes, names: tuple[str, ...]) -> dict[str, list[float]]:
    """The finite sample values of each named metric (one per series), from exposition text."""
    wanted = {name.encode(): name for name in names}
    prefixes = tuple(wanted)
    out: dict[str, list[float]] = {}
    for line in body.split(b"\n"):
        if not line.startswith(prefixes):
            continue
        end = _name_end(line)
        name = wanted.get(line[:end])
        if name is None:
            continue  # a longer name with a wanted prefix (vllm:num_requests_waiting_by_reason, ...)
        value = _value(line, end)
        if value is not None:
            out.setdefault(name, []).append(value)
    return out


def _name_end(line: bytes) -> int:
    for i, byte in enumerate(line):
        if byte in b"{ \t":
            return i
    return len(line)


def _value(line: bytes, start: int) -> float | None:
    """The sample value after the name and its labels (`name{a="b"} 1.5 [timestamp]`)."""
    i = start
    if i < len(line) and line[i : i + 1] == b"{":
        i = _labels_end(line, i + 1)
        if i < 0:
            return None
    fields = line[i:].split()
    if not fields:
        return None
    try:
        value = float(fields[0])
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _labels_end(line: bytes, i: int) -> int:
    """The index after the closing brace of a label set; label values are quoted and may hold braces."""
    quoted = False
    while i < len(line):
        byte = line[i]
        if quoted:
            if byte == 0x5C:  # backslash: the next byte is escaped
                i += 1
            elif byte == 0x22:
                quoted = False
        elif byte == 0x22:
            quoted = True
        elif byte == 0x7D:
            return i + 1
        i += 1
    return -1
