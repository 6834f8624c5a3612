"""Inference-aware balancing across the model servers behind one pool (vLLM, SGLang, any OpenAI-compatible server).

A pool with `endpoints` holds several base URLs. Each attempt against it picks one (`balancer`), the way it picks a
key: by the servers' own load (`least-load`), by the prompt's leading text so a shared prefix keeps hitting a warm
KV cache (`prefix-affinity`), or in turn (`round-robin`). The load comes from each server's metrics, scraped by one
background task per process (`scraper`, parsers in `exposition`), plus this process's own requests in flight since
the last scrape (`state`). Nothing here runs on the request path but the pick itself, which reads state in memory.

The modules import nothing of the request path except the call they hash (`prefix`), so pools.py can build the
per-snapshot `EndpointSet` without an import cycle; this package file imports none of them for the same reason.
"""
