"""Settings that connect a gateway to the two simulators (used by the sandbox and the tests).

The gateway is configured the way an operator would configure it: a gateway.yaml with
`${VAR}` references and an environment, loaded by the real settings loader.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gateway.settings import Settings
from gateway.settings_loader import load_settings

REPO_MAPPINGS = Path(__file__).resolve().parent.parent.parent / "mappings"

CHAT_CHANNEL = "chat_watering_hole"
BOARD_CHANNEL = "board_watering_hole"


@dataclass(frozen=True)
class SandboxSecrets:
    """The shared secrets both sides of the sandbox agree on."""

    wh_api_token: str = "wh-token-sandbox-0123456789"
    wh_secret: str = "wh-webhook-secret-sandbox"
    wh_verify_token: str = "wh-verify-sandbox"
    byoc_client_id: str = "jungle-byoc"
    byoc_client_secret: str = "byoc-client-secret-sandbox"
    token_signing_key: str = "sandbox-signing-key-0123456789-abcdefghijklmnop"
    access_key_id: str = "AKSANDBOX"
    access_key_secret: str = "access-key-secret-sandbox"
    app_client_id: str = "sandbox-app"
    app_client_secret: str = "sandbox-app-secret"
    admin_token: str = "sandbox-admin-token"


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `override` into a copy of `base`, recursing into mappings."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def sandbox_config(
    directory: Path,
    *,
    mappings_dir: Path = REPO_MAPPINGS,
    channels: Sequence[Mapping[str, str]] | None = None,
    integration: str = "jungle",
    backend: str = "sqlite",
    redis_url: str | None = None,
    platform_port: int = 0,
    cxone_port: int = 0,
    workers: int = 8,
    poll_interval: float = 0.05,
    max_attempts: int = 12,
    base_delay: float = 0.05,
    max_delay: float = 1.0,
    deadline: float = 5.0,
    log_format: str = "json",
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The gateway.yaml tree of a gateway wired to the simulators; secrets stay `${VAR}`."""
    store: dict[str, Any] = {"backend": backend}
    if backend == "redis":
        store.update(url=redis_url, prefix=f"byoc-{directory.name}")
    tree: dict[str, Any] = {
        "mappings_dir": str(mappings_dir),
        "data_dir": str(directory / "data"),
        "admin_token": "${ADMIN_TOKEN}",
        "listeners": {
            "platform": {"host": "127.0.0.1", "port": platform_port},
            "cxone": {"host": "127.0.0.1", "port": cxone_port},
        },
        "cxone": {
            "auth": {
                "issuer": "${CXONE_ISSUER}",
                "access_key_id": "${CXONE_ACCESS_KEY_ID}",
                "access_key_secret": "${CXONE_ACCESS_KEY_SECRET}",
                "client_id": "${CXONE_APP_CLIENT_ID}",
                "client_secret": "${CXONE_APP_CLIENT_SECRET}",
            },
            "timeouts": {"connect": 2, "read": 5, "total": 8},
            "retry": {"max_attempts": 3, "base_delay": 0.05, "max_delay": 0.5},
        },
        "integrations": [
            {
                "name": integration,
                "client_id": "${BYOC_CLIENT_ID}",
                "client_secrets": ["${BYOC_CLIENT_SECRET}"],
                "token_signing_key": "${BYOC_TOKEN_SIGNING_KEY}",
                "channels": [dict(c) for c in channels]
                if channels is not None
                else [
                    {"id": CHAT_CHANNEL, "mapping": "watering-hole", "role": "chat"},
                    {"id": BOARD_CHANNEL, "mapping": "watering-hole", "role": "board"},
                ],
            }
        ],
        "store": store,
        "delivery": {
            "workers": workers,
            "poll_interval": poll_interval,
            "retry": {
                "max_attempts": max_attempts,
                "base_delay": base_delay,
                "max_delay": max_delay,
            },
        },
        "outbound": {"deadline": deadline},
        "logging": {"level": "INFO", "format": log_format},
    }
    return deep_merge(tree, overrides or {})


def sandbox_env(
    wh_api: str, cxone_issuer: str, secrets: SandboxSecrets | None = None
) -> dict[str, str]:
    """The environment a gateway needs to talk to the simulators."""
    s = secrets or SandboxSecrets()
    return {
        "WATERING_HOLE_API": wh_api,
        "WATERING_HOLE_TOKEN": s.wh_api_token,
        "WH_SECRET": s.wh_secret,
        "WH_VERIFY_TOKEN": s.wh_verify_token,
        "CXONE_ISSUER": cxone_issuer,
        "CXONE_ACCESS_KEY_ID": s.access_key_id,
        "CXONE_ACCESS_KEY_SECRET": s.access_key_secret,
        "CXONE_APP_CLIENT_ID": s.app_client_id,
        "CXONE_APP_CLIENT_SECRET": s.app_client_secret,
        "BYOC_CLIENT_ID": s.byoc_client_id,
        "BYOC_CLIENT_SECRET": s.byoc_client_secret,
        "BYOC_TOKEN_SIGNING_KEY": s.token_signing_key,
        "ADMIN_TOKEN": s.admin_token,
    }


def write_settings(directory: Path, tree: Mapping[str, Any], env: Mapping[str, str]) -> Settings:
    """Write `tree` as directory/gateway.yaml and load it with the real loader and `env`."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "gateway.yaml"
    path.write_text(yaml.safe_dump(dict(tree), sort_keys=False), encoding="utf-8")
    return load_settings(path, env=env)


def write_sandbox_settings(
    directory: Path,
    *,
    wh_api: str,
    cxone_issuer: str,
    secrets: SandboxSecrets | None = None,
    extra_env: Mapping[str, str] | None = None,
    **config: Any,
) -> Settings:
    """Write gateway.yaml for the simulators into `directory` (see sandbox_config) and load it."""
    env = sandbox_env(wh_api, cxone_issuer, secrets)
    env.update(extra_env or {})
    return write_settings(directory, sandbox_config(directory, **config), env)
