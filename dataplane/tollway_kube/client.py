"""A small asyncio client for the Kubernetes API (aiohttp), shared by the operator and the data plane.

Credentials come from a kubeconfig, the in-cluster service account, or KUBECONFIG / ~/.kube/config, in that
order (the official client's loaders find them; its HTTP stack is not used). It makes the few calls Tollway
needs: get, list, watch, create, replace, patch, delete; errors come back as `KubeError`.
"""

from __future__ import annotations

import dataclasses
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson


class KubeError(Exception):
    def __init__(self, status: int, reason: str, message: str):
        self.status = status
        self.reason = reason
        super().__init__(f"{status} {reason}: {message}")


@dataclass
class KubeCredentials:
    """Where the API server is and how to authenticate, as the official client's config loaders find it."""

    server: str
    ca_path: str | None = None
    cert_path: str | None = None
    key_path: str | None = None
    insecure: bool = False
    description: str = ""
    _configuration: Any = dataclasses.field(default=None, repr=False)

    @classmethod
    def load(cls, kubeconfig: str | None = None) -> KubeCredentials:
        """An explicit kubeconfig; else the in-cluster service account; else KUBECONFIG or ~/.kube/config."""
        import kubernetes.client
        import kubernetes.config

        configuration = kubernetes.client.Configuration()
        if kubeconfig:
            kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            description = f"kubeconfig {kubeconfig}"
        elif os.environ.get("KUBERNETES_SERVICE_HOST"):
            kubernetes.config.load_incluster_config(client_configuration=configuration)
            description = "in-cluster service account"
        else:
            kubernetes.config.load_kube_config(client_configuration=configuration)
            description = f"kubeconfig {os.environ.get('KUBECONFIG') or '~/.kube/config'}"
        return cls(
            server=configuration.host.rstrip("/"),
            ca_path=configuration.ssl_ca_cert,
            cert_path=configuration.cert_file,
            key_path=configuration.key_file,
            insecure=not configuration.verify_ssl,
            description=description,
            _configuration=configuration,
        )

    def authorization(self) -> str | None:
        """The Authorization header value; re-read on every call, so rotated service-account tokens are used."""
        if self._configuration is None:
            return None
        configuration = self._configuration
        value = configuration.get_api_key_with_prefix("BearerToken") or configuration.get_api_key_with_prefix(
            "authorization"
        )
        if value and " " not in value:
            value = f"Bearer {value}"
        return value or None

    def token(self) -> str | None:
        value = self.authorization()
        return value.split(" ", 1)[1] if value else None

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca_path) if self.ca_path else ssl.create_default_context()
        if self.cert_path and self.key_path:
            context.load_cert_chain(self.cert_path, self.key_path)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class KubeClient:
    """The few API calls Tollway makes, over one aiohttp session. Errors come back as KubeError."""

    def __init__(self, credentials: KubeCredentials, *, request_timeout: float = 30.0, connections: int = 64):
        self.credentials = credentials
        self._timeout = aiohttp.ClientTimeout(total=request_timeout, connect=10)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self.credentials.ssl_context(), limit=self._connections)
            self._session = aiohttp.ClientSession(
                self.credentials.server, connector=connector, json_serialize=lambda o: orjson.dumps(o).decode()
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _headers(self, content_type: str | None = None, accept: str | None = None) -> dict[str, str]:
        headers = {"Accept": accept or "application/json", "User-Agent": "tollway"}
        authorization = self.credentials.authorization()
        if authorization:
            headers["Authorization"] = authorization
        if content_type:
            headers["Content-Type"] = content_type
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str | None = None,
    ) -> dict[str, Any]:
        data = orjson.dumps(body) if body is not None else None
        headers = self._headers(content_type if data is not None else None, accept)
        async with self.session.request(
            method, path, params=params, data=data, headers=headers, timeout=self._timeout
        ) as response:
            raw = await response.read()
            if response.status >= 400:
                raise _error(response.status, raw)
            return orjson.loads(raw) if raw else {}

    async def get(self, path: str, **kwargs: Any) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return await self.request("GET", path, **kwargs)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def watch(
        self, path: str, params: Mapping[str, str], *, read_timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """Watch events, one dict each, until the server ends the stream."""
        query = {**params, "watch": "1"}
        timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=read_timeout)
        async with self.session.get(path, params=query, headers=self._headers(), timeout=timeout) as response:
            if response.status >= 400:
                raise _error(response.status, await response.read())
            buffer = b""
            async for chunk in response.content.iter_any():
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        yield orjson.loads(line)


def _error(status: int, raw: bytes) -> KubeError:
    try:
        body = orjson.loads(raw)
        return KubeError(status, str(body.get("reason") or ""), str(body.get("message") or raw[:200]))
    except (orjson.JSONDecodeError, AttributeError):
        return KubeError(status, "", raw[:200].decode("utf-8", "replace"))


def object_path(kind: str, namespace: str, name: str | None = None) -> str:
    plural = {"ConfigMap": "configmaps", "Secret": "secrets"}[kind]
    base = f"/api/v1/namespaces/{quote(namespace)}/{plural}"
    return f"{base}/{quote(name)}" if name else base
