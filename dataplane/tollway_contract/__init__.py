"""The config contract shared by the operator (which produces it) and the data plane (which owns and reads it)."""

from .dump import config_to_dict, content_hash, secrets_to_dict
from .load import (
    ConfigError,
    config_from_dict,
    load_config_file,
    load_secrets_file,
    parse_document,
    secrets_from_dict,
)
from .model import *  # noqa: F403 - the contract's types are this package's API
from .model import SCHEMA_VERSION, GatewayConfig, SecretsConfig

__all__ = [
    "SCHEMA_VERSION",
    "ConfigError",
    "GatewayConfig",
    "SecretsConfig",
    "config_from_dict",
    "config_to_dict",
    "content_hash",
    "load_config_file",
    "load_secrets_file",
    "parse_document",
    "secrets_from_dict",
    "secrets_to_dict",
]
