"""Settings that connect a gateway to the two simulators (used by the sandbox and the tests).

The gateway is configured the way an operator would configure it: a gateway.yaml with
`${VAR}` references and an environment, loaded by the real settings loader.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.settings import Settings, load_settings

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


GATEWAY_YAML = """\
mappings_dir: {mappings_dir}
data_dir: {data_dir}
admin_token: ${{ADMIN_TOKEN}}
listeners:
  platform: {{host: 127.0.0.1, port: {platform_port}}}
  cxone: {{host: 127.0.0.1, port: {cxone_port}}}
cxone:
  auth:
    issuer: ${{CXONE_ISSUER}}
    access_key_id: ${{CXONE_ACCESS_KEY_ID}}
    access_key_secret: ${{CXONE_ACCESS_KEY_SECRET}}
    client_id: ${{CXONE_APP_CLIENT_ID}}
    client_secret: ${{CXONE_APP_CLIENT_SECRET}}
  timeouts: {{connect: 2, read: 5, total: 8}}
  retry: {{max_attempts: 3, base_delay: 0.05, max_delay: 0.5}}
integrations:
  - name: jungle
    client_id: ${{BYOC_CLIENT_ID}}
    client_secrets: ["${{BYOC_CLIENT_SECRET}}"]
    token_signing_key: ${{BYOC_TOKEN_SIGNING_KEY}}
    channels:
      - {{id: {chat}, mapping: watering-hole, role: chat}}
      - {{id: {board}, mapping: watering-hole, role: board}}
store:
  backend: {backend}
{store_extra}delivery:
  workers: {workers}
  poll_interval: {poll_interval}
  retry: {{max_attempts: {max_attempts}, base_delay: {base_delay}, max_delay: {max_delay}}}
outbound:
  deadline: {deadline}
logging: {{level: INFO, format: {log_format}}}
"""


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


def write_sandbox_settings(
    directory: Path,
    *,
    wh_api: str,
    cxone_issuer: str,
    secrets: SandboxSecrets | None = None,
    mappings_dir: Path = REPO_MAPPINGS,
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
    extra_env: Mapping[str, str] | None = None,
) -> Settings:
    """Write gateway.yaml into `directory` and load it with the real loader."""
    directory.mkdir(parents=True, exist_ok=True)
    store_extra = (
        f"  url: {redis_url}\n  prefix: byoc-{directory.name}\n" if backend == "redis" else ""
    )
    text = GATEWAY_YAML.format(
        mappings_dir=str(mappings_dir),
        data_dir=str(directory / "data"),
        platform_port=platform_port,
        cxone_port=cxone_port,
        chat=CHAT_CHANNEL,
        board=BOARD_CHANNEL,
        backend=backend,
        store_extra=store_extra,
        workers=workers,
        poll_interval=poll_interval,
        max_attempts=max_attempts,
        base_delay=base_delay,
        max_delay=max_delay,
        deadline=deadline,
        log_format=log_format,
    )
    path = directory / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    env = sandbox_env(wh_api, cxone_issuer, secrets)
    env.update(extra_env or {})
    return load_settings(path, env=env)
