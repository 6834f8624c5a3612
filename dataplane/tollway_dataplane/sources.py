"""Where the config comes from, and the watcher that hot-reloads it.

A source is polled for a cheap fingerprint (file names, sizes and modification times); when that changes the
source is loaded and validated off the event loop. An invalid change is logged with every reason and
rejected whole; the last good snapshot keeps serving. A source that learns about changes itself (a Kubernetes
watch) can also wake the reloader at once instead of waiting for the next poll (`NotifyingSource`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from tollway_contract.dump import content_hash
from tollway_contract.load import ConfigError, load_config_file, load_secrets_file
from tollway_contract.model import GatewayConfig, SecretsConfig

from . import metrics
from .app import Gateway

log = logging.getLogger("tollway.config")


@dataclass(frozen=True)
class Loaded:
    config: GatewayConfig
    secrets: SecretsConfig
    notes: tuple[str, ...] = ()  # non-fatal findings worth a log line (CR status problems, ...)


class ConfigSource(Protocol):
    def describe(self) -> str: ...

    def fingerprint(self) -> object: ...

    def load(self) -> Loaded:
        """Read and validate; raise ConfigError (or ValueError) with readable reasons."""
        ...


@runtime_checkable
class NotifyingSource(Protocol):
    """Optional: a source that knows when it changed calls `notify()` (from any thread) to wake the reloader."""

    def subscribe(self, notify: Callable[[], None]) -> None: ...


class FilesFingerprint:
    """Names, sizes and modification times of files; plus a checksum of each file version first seen within two
    seconds of its change, because an edit that keeps the size within the file system's timestamp granularity
    leaves both unchanged. A version's checksum is remembered, so its entry never changes by itself once the two
    seconds pass (which would look like an edit and reload, or reject, the same files twice)."""

    def __init__(self) -> None:
        self._checksums: dict[tuple[str, int, int], int] = {}

    def __call__(self, paths: list[Path]) -> tuple[tuple[str, int, int, int], ...]:
        recent = time.time_ns() - 2_000_000_000
        entries = []
        checksums: dict[tuple[str, int, int], int] = {}
        for path in paths:
            files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for file in files:
                try:
                    stat = file.stat()
                    version = (str(file), stat.st_size, stat.st_mtime_ns)
                    checksum = self._checksums.get(version)
                    if checksum is None:
                        checksum = zlib.crc32(file.read_bytes()) if stat.st_mtime_ns >= recent else 0
                except OSError:
                    continue
                checksums[version] = checksum
                entries.append((*version, checksum))
        self._checksums = checksums  # only the versions present now
        return tuple(entries)


class FileSource:
    """A config file in the contract's format (as the operator renders it), plus an optional secrets file."""

    def __init__(self, config_path: Path, secrets_path: Path | None = None):
        self.config_path = config_path
        self.secrets_path = secrets_path
        self._fingerprint = FilesFingerprint()

    def describe(self) -> str:
        return str(self.config_path)

    def fingerprint(self) -> object:
        return self._fingerprint([p for p in (self.config_path, self.secrets_path) if p is not None])

    def load(self) -> Loaded:
        config = load_config_file(self.config_path)
        secrets = load_secrets_file(self.secrets_path) if self.secrets_path else SecretsConfig()
        if self.secrets_path and secrets.hash and secrets.hash != config.hash:
            raise ConfigError([f"{self.secrets_path}: hash {secrets.hash} does not match config hash {config.hash}"])
        if not config.hash:  # a hand-written file: derive the hash that /readyz and metrics report
            config = dataclasses.replace(config, hash=content_hash(config, secrets))
        return Loaded(config, secrets)


class Reloader:
    def __init__(self, gateway: Gateway, source: ConfigSource, interval: float = 0.5):
        self.gateway = gateway
        self.source = source
        self.interval = interval
        self._fingerprint: object = None
        self._lock = asyncio.Lock()  # the watcher and an explicit reload never load at the same time

    async def load_once(self) -> bool:
        """Load if the source changed. True when a new snapshot went live."""
        async with self._lock:
            return await self._load_if_changed()

    async def _load_if_changed(self) -> bool:
        fingerprint = await asyncio.to_thread(self.source.fingerprint)
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        try:
            loaded = await asyncio.to_thread(self.source.load)
        except (ConfigError, ValueError, OSError) as exc:
            problems = exc.problems if isinstance(exc, ConfigError) else [str(exc)]
            metrics.RELOAD_FAILURES.inc()
            current = self.gateway.snapshot
            log.error(
                "config rejected; %s",
                "the last good config keeps serving" if current else "nothing is served until a valid config loads",
                extra={
                    "source": self.source.describe(),
                    "problems": problems,
                    "serving_hash": current.hash if current else None,
                },
            )
            return False
        current = self.gateway.snapshot
        if current is not None and current.hash == loaded.config.hash and loaded.config.hash:
            return False
        snapshot = self.gateway.build_snapshot(loaded.config, loaded.secrets)
        self.gateway.install(snapshot)
        for note in (*loaded.notes, *snapshot.warnings):
            log.warning("config note: %s", note)
        log.info(
            "config loaded",
            extra={
                "source": self.source.describe(),
                "hash": snapshot.hash,
                "generation": snapshot.generation,
                "routes": len(loaded.config.routes),
                "consumers": len(loaded.config.consumers),
                "pools": len(loaded.config.pools),
            },
        )
        return True

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        woken = asyncio.Event()
        if isinstance(self.source, NotifyingSource):

            def notify() -> None:
                with contextlib.suppress(RuntimeError):  # the loop is closing: nothing left to wake
                    loop.call_soon_threadsafe(woken.set)

            self.source.subscribe(notify)
        # When the gateway's start has loaded already, the watcher looks again only after one interval (or a
        # notification), so a start is never followed by a second load racing whatever changes next.
        while True:
            if self._fingerprint is not None:  # loaded before: wait for a change (or the next poll)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(woken.wait(), self.interval)
            woken.clear()  # before loading: a change noticed during the load wakes the next wait at once
            try:
                await self.load_once()
            except Exception:
                log.exception("config watcher error")
