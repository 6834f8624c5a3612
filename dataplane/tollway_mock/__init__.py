"""Tollway mock LLM: an upstream that speaks the OpenAI protocol and does whatever a test scripts."""

from .app import ENGINE, REQUEST_LOG, SCRIPT_BOOK, add_arguments, create_app, main, run_from_args, serve
from .engine import EngineSettings

__all__ = [
    "ENGINE",
    "REQUEST_LOG",
    "SCRIPT_BOOK",
    "EngineSettings",
    "add_arguments",
    "create_app",
    "main",
    "run_from_args",
    "serve",
]
