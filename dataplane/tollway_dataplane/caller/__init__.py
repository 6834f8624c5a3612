"""The caller's protocols other than OpenAI: each turns its requests into the canonical call on the way in and the
OpenAI-shaped answer (whole, streamed, or an error) into what its callers speak on the way out."""
