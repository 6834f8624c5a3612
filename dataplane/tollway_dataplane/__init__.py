"""Tollway data plane: the aiohttp gateway that serves OpenAI-compatible traffic."""

__version__ = "0.1.0"
