"""Azure OpenAI upstreams (`provider: azure-openai`): the OpenAI protocol at a deployment URL.

`POST {baseURL}/openai/deployments/{deployment}/{endpoint}?api-version={azure.apiVersion}`, authenticated with an
`api-key` header. The deployment is the backend's (possibly rewritten) model name; bodies and streams are
OpenAI's, so everything else is the OpenAI translator's. Responses API requests pass through natively to
`POST {baseURL}/openai/v1/responses` (Azure's v1 API, where the body's `model` is the deployment).
"""

from __future__ import annotations

from urllib.parse import quote

from ..call import Call
from ..pools import PoolKeyRuntime, PoolRuntime
from .openai import OpenAITranslator


class AzureOpenAITranslator(OpenAITranslator):
    def url(self, call: Call, pool: PoolRuntime, model: str) -> str:
        # The resource endpoint is the documented base; one that already ends in /openai is accepted too.
        base = pool.config.base_url.removesuffix("/openai")
        url = f"{base}/openai/deployments/{quote(model, safe='')}/{call.endpoint}"
        version = pool.config.azure_api_version
        return f"{url}?api-version={quote(version, safe='')}" if version else url

    def responses_url(self, pool: PoolRuntime) -> str:
        # The Responses API lives on Azure's v1 surface: no deployment in the path (the body's model names it).
        return f"{pool.config.base_url.removesuffix('/openai')}/openai/v1/responses"

    def auth_headers(self, key: PoolKeyRuntime | None) -> dict[str, str]:
        return {"api-key": key.value} if key is not None else {}
