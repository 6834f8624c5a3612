"""The mock's `/metrics`: Prometheus text in the names vLLM or SGLang use, with a few other series around them
(histogram buckets, counters, a per-engine label) so a scraper is tested against a realistic page, not three lines.
"""

from __future__ import annotations

from .engine import Report

FORMATS = ("vllm", "sglang")


def render(format: str, model: str, report: Report, prompt_tokens_total: int = 0) -> str:
    if format == "sglang":
        labels = f'model_name="{model}"'
        return "".join(
            (
                _gauge("sglang:num_running_reqs", "The number of running requests.", labels, report.running),
                _gauge("sglang:num_queue_reqs", "The number of requests in the waiting queue.", labels, report.waiting),
                _gauge("sglang:token_usage", "The token usage.", labels, report.kv_cache_usage),
                _gauge("sglang:cache_hit_rate", "The prefix cache hit rate.", labels, 0.0),
                _counter("sglang:prompt_tokens", "Number of prefill tokens processed.", labels, prompt_tokens_total),
            )
        )
    labels = f'engine="0",model_name="{model}"'
    return "".join(
        (
            _gauge(
                "vllm:num_requests_running", "Number of requests in model execution batches.", labels, report.running
            ),
            _gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels, report.waiting),
            _gauge(
                "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels, report.kv_cache_usage
            ),
            _counter("vllm:prompt_tokens", "Number of prefill tokens processed.", labels, prompt_tokens_total),
            "# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.\n"
            "# TYPE vllm:time_to_first_token_seconds histogram\n",
            *(f'vllm:time_to_first_token_seconds_bucket{{{labels},le="{le}"}} 0.0\n' for le in ("0.1", "1.0", "+Inf")),
            f"vllm:time_to_first_token_seconds_count{{{labels}}} 0.0\n",
        )
    )


def _gauge(name: str, help: str, labels: str, value: float) -> str:
    return f"# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {float(value)}\n"


def _counter(name: str, help: str, labels: str, value: float) -> str:
    return f"# HELP {name} {help}\n# TYPE {name} counter\n{name}_total{{{labels}}} {float(value)}\n"
