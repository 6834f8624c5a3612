"""Web-search grounding with citations in OpenAI's own format, and private knowledge search.

`stage` decides and injects, `prompt` reads the caller's `web_search_options` and renders the system message,
`rewrite` asks a small model for queries (or whether to search at all), `search` runs the engines in parallel,
`engines/` holds one module per engine (SearXNG, Tavily, Google, Quark/IQS, arXiv, Elasticsearch), `results`
merges and numbers what they found, and `citations` turns the model's `[n]` markers into `url_citation`
annotations (or a sources block) on the way out.
"""

from .stage import build

__all__ = ["build"]
