"""Translators by `provider` value. Adding a protocol means adding a module and one line here."""

from __future__ import annotations

from .anthropic import AnthropicTranslator
from .azure import AzureOpenAITranslator
from .base import Translator
from .gemini import GeminiTranslator
from .openai import OpenAITranslator

_TRANSLATORS: dict[str, Translator] = {
    "openai": OpenAITranslator(responses=True),  # Responses API requests pass through natively
    "openai-compatible": OpenAITranslator(),
    "azure-openai": AzureOpenAITranslator(responses=True),
    "anthropic": AnthropicTranslator(),
    "gemini": GeminiTranslator(),
}


def translator_for(provider: str) -> Translator | None:
    return _TRANSLATORS.get(provider)
