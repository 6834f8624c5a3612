"""Tollway mock LLM: an upstream that speaks the OpenAI protocol and does whatever a test scripts."""

from .app import REQUEST_LOG, SCRIPT_BOOK, add_arguments, create_app, main, run_from_args, serve

__all__ = ["REQUEST_LOG", "SCRIPT_BOOK", "add_arguments", "create_app", "main", "run_from_args", "serve"]
