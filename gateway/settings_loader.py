"""gateway.yaml + environment -> frozen settings (`gateway.settings`).

Pipeline: yaml.safe_load -> JSON Schema (schemas/gateway.schema.json, unknown keys are
errors) -> `${VAR}` resolution (missing secret: fail closed) -> frozen dataclasses.
Every problem names the file, the place in it (line when known) and the fix.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from gateway.errors import ConfigError, Problem
from gateway.secrets import Secret, resolve_tree
from gateway.settings import (
    ChannelBinding,
    CxoneAuthSettings,
    CxoneSettings,
    DeliverySettings,
    IntegrationSettings,
    ListenerSettings,
    LoggingSettings,
    OutboundSettings,
    RetrySettings,
    Settings,
    StoreSettings,
    Timeouts,
    TlsClientSettings,
    TlsServerSettings,
)

_SCHEMA_FILE = Path(__file__).resolve().parent / "schemas" / "gateway.schema.json"


def load_settings(path: Path, *, env: Mapping[str, str] | None = None) -> Settings:
    """Read, validate and resolve gateway.yaml; raise ConfigError naming file and place."""
    from gateway.config_file import load_document, validate  # local: keeps import light

    doc = load_document(path)
    validate(doc, _schema(), fix_hint="see schemas/gateway.schema.json and docs/configuration.md")
    problems: list[Problem] = []
    tree = resolve_tree(doc.tree, file=doc.file, env=env, base_dir=path.parent, problems=problems)
    if problems:
        for p in problems:
            p.line = doc.line_of(p.where)
        raise ConfigError(problems)
    try:
        return _build(tree, path, env, doc.file)
    except ConfigError as exc:
        for p in exc.problems:
            if p.line is None and p.file == doc.file and p.where:
                p.line = doc.line_of(p.where)
        raise


def check_settings_file(path: Path, *, check_secrets: bool = True) -> list[Problem]:
    """Every problem of a gateway.yaml (with check_secrets=False: schema and references only)."""
    from gateway.config_file import load_document, validate

    try:
        if check_secrets:
            load_settings(path)
        else:
            doc = load_document(path)
            validate(doc, _schema(), fix_hint="see schemas/gateway.schema.json")
            problems: list[Problem] = []
            resolve_tree(doc.tree, file=doc.file, env=_AnyEnv(), problems=problems)
            if problems:
                raise ConfigError(problems)
    except ConfigError as exc:
        return exc.problems
    return []


class _AnyEnv(dict[str, str]):
    """An environment in which every variable is set (to check references only)."""

    def get(self, key: str, default: Any = None) -> str:
        return "x" * 48


def _schema() -> dict[str, Any]:
    from gateway import jsonutil

    schema: dict[str, Any] = jsonutil.loads(_SCHEMA_FILE.read_bytes())
    return schema


def _secret(value: Any, name: str) -> Secret | None:
    if value is None or value == "":
        return None
    return Secret(str(value), name)


def _given(raw: Mapping[str, Any] | None, **convert: Callable[[Any], Any]) -> dict[str, Any]:
    """The fields `raw` sets, converted; the others keep their defaults (gateway.settings)."""
    if not raw:
        return {}
    return {name: to(raw[name]) for name, to in convert.items() if name in raw}


def _timeouts(raw: Mapping[str, Any] | None) -> Timeouts:
    return Timeouts(**_given(raw, connect=float, read=float, total=float))


def _retry(raw: Mapping[str, Any] | None, default: RetrySettings) -> RetrySettings:
    given = _given(
        raw,
        max_attempts=int,
        base_delay=float,
        max_delay=float,
        max_retry_after=float,
        retry_statuses=tuple,
        deadline=float,
    )
    return replace(default, **given)


def _path(base: Path, value: Any) -> Path | None:
    if value in (None, ""):
        return None
    p = Path(str(value))
    return p if p.is_absolute() else base / p


def _tls_client(raw: Mapping[str, Any] | None, base: Path) -> TlsClientSettings:
    raw = raw or {}
    return TlsClientSettings(
        ca_file=_path(base, raw.get("ca_file")),
        cert_file=_path(base, raw.get("cert_file")),
        key_file=_path(base, raw.get("key_file")),
        key_password=_secret(raw.get("key_password"), "key_password"),
    )


def _networks(
    raw: Mapping[str, Any], key: str, file: str, pointer: str, problems: list[Problem]
) -> tuple[str, ...]:
    values = tuple(str(v) for v in raw.get(key, ()))
    for i, value in enumerate(values):
        try:
            ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            problems.append(
                Problem(
                    file,
                    f"{pointer}/{key}/{i}",
                    f"{value!r} is not an IP network",
                    "write an address or a CIDR, e.g. 10.0.0.0/8 or 2001:db8::/32",
                )
            )
    return values


def _listener(
    raw: Mapping[str, Any] | None,
    base: Path,
    default_port: int,
    *,
    file: str = "gateway.yaml",
    pointer: str = "",
    problems: list[Problem] | None = None,
) -> ListenerSettings:
    raw = raw or {}
    found: list[Problem] = [] if problems is None else problems
    tls_raw = raw.get("tls")
    tls = None
    if tls_raw:
        cert, key = _path(base, tls_raw["cert_file"]), _path(base, tls_raw["key_file"])
        assert cert is not None and key is not None  # required by the schema
        client_ca = _path(base, tls_raw.get("client_ca"))
        if client_ca is None:
            for name in ("client_subjects", "client_certificate"):
                if tls_raw.get(name):
                    found.append(
                        Problem(
                            file,
                            f"{pointer}/tls/{name}",
                            f"{name} has no effect without client_ca",
                            "set client_ca to the CA that signs the client certificates",
                        )
                    )
        tls = TlsServerSettings(
            cert_file=cert,
            key_file=key,
            key_password=_secret(tls_raw.get("key_password"), "key_password"),
            client_ca=client_ca,
            **_given(tls_raw, client_subjects=tuple, client_certificate=str),
        )
    listener = ListenerSettings(
        port=int(raw.get("port", default_port)),
        tls=tls,
        allow=_networks(raw, "allow", file, pointer, found),
        trusted_proxies=_networks(raw, "trusted_proxies", file, pointer, found),
        **_given(raw, host=str, public_url=str, max_body_bytes=int, read_timeout=float),
    )
    if problems is None and found:
        raise ConfigError(found)
    return listener


def _build(
    tree: Mapping[str, Any], path: Path, env: Mapping[str, str] | None, file: str
) -> Settings:
    base = path.parent
    cx = tree["cxone"]
    auth = cx["auth"]
    cxone = CxoneSettings(
        auth=CxoneAuthSettings(
            access_key_id=Secret(auth["access_key_id"], "access_key_id"),
            access_key_secret=Secret(auth["access_key_secret"], "access_key_secret"),
            client_id=_secret(auth.get("client_id"), "client_id"),
            client_secret=_secret(auth.get("client_secret"), "client_secret"),
            token_endpoint=auth.get("token_endpoint") or None,
            issuer=auth.get("issuer") or None,
            **_given(auth, refresh_margin=float),
        ),
        api_base=cx.get("api_base") or None,
        timeouts=_timeouts(cx.get("timeouts")),
        retry=_retry(cx.get("retry"), RetrySettings()),
        tls=_tls_client(cx.get("tls"), base),
    )
    integrations = []
    seen_channels: dict[str, str] = {}
    problems: list[Problem] = []
    for i, it in enumerate(tree["integrations"]):
        channels = []
        for j, ch in enumerate(it["channels"]):
            if ch["id"] in seen_channels:
                problems.append(
                    Problem(
                        file,
                        f"/integrations/{i}/channels/{j}/id",
                        f"CXone channel id {ch['id']!r} is bound twice",
                        "give every CXone channel exactly one binding",
                    )
                )
            seen_channels[ch["id"]] = it["name"]
            channels.append(
                ChannelBinding(
                    id=ch["id"],
                    mapping=ch["mapping"],
                    role=ch["role"],
                    name=ch.get("name"),
                    id_on_external_platform=ch.get("id_on_external_platform"),
                )
            )
        secrets = tuple(Secret(s, "client_secret") for s in it["client_secrets"] if s)
        if not secrets:
            problems.append(
                Problem(
                    file,
                    f"/integrations/{i}/client_secrets",
                    "no non-empty client secret",
                    "set at least one client secret (use ${VAR})",
                )
            )
        if len(it["token_signing_key"]) < 32:
            problems.append(
                Problem(
                    file,
                    f"/integrations/{i}/token_signing_key",
                    "the token signing key is shorter than 32 characters",
                    "generate one: python -c 'import secrets; print(secrets.token_urlsafe(48))'",
                )
            )
        integrations.append(
            IntegrationSettings(
                name=it["name"],
                client_id=it["client_id"],
                client_secrets=secrets,
                token_signing_key=Secret(it["token_signing_key"], "token_signing_key"),
                channels=tuple(channels),
                **_given(it, integration_id=str, token_ttl=int, mtls=bool),
            )
        )
    listeners = tree.get("listeners", {})
    platform_listener = _listener(
        listeners.get("platform"),
        base,
        8080,
        file=file,
        pointer="/listeners/platform",
        problems=problems,
    )
    cxone_listener = _listener(
        listeners.get("cxone"), base, 8443, file=file, pointer="/listeners/cxone", problems=problems
    )
    if cxone_listener.tls is None or cxone_listener.tls.client_ca is None:
        for i, integ in enumerate(integrations):
            if integ.mtls:
                problems.append(
                    Problem(
                        file,
                        f"/integrations/{i}/mtls",
                        "mtls needs client certificates, but listeners.cxone.tls has no client_ca",
                        "set listeners.cxone.tls.client_ca (see docs/security.md)",
                    )
                )
    if problems:
        raise ConfigError(problems)
    data_dir = _path(base, tree.get("data_dir", "data")) or base / "data"
    st = tree.get("store", {})
    store = StoreSettings(
        path=_path(data_dir, st.get("path")) or data_dir / "gateway.sqlite3",
        url=_secret(st.get("url"), "store_url"),
        **_given(st, backend=str, prefix=str, dedupe_ttl=float),
    )
    dl = tree.get("delivery", {})
    delivery = DeliverySettings(
        retry=_retry(dl.get("retry"), DeliverySettings().retry),
        **_given(dl, workers=int, lease_seconds=float, poll_interval=float, intake_hold=float),
    )
    return Settings(
        source=path,
        mappings_dir=_path(base, tree.get("mappings_dir", "mappings")) or base / "mappings",
        platform_listener=platform_listener,
        cxone_listener=cxone_listener,
        cxone=cxone,
        integrations=tuple(integrations),
        store=store,
        delivery=delivery,
        outbound=OutboundSettings(
            **_given(tree.get("outbound"), deadline=float, idempotency_window=float)
        ),
        logging=LoggingSettings(
            **_given(
                tree.get("logging"),
                level=lambda v: str(v).upper(),
                format=str,
                log_message_text=bool,
            )
        ),
        admin_token=_secret(tree.get("admin_token"), "admin_token"),
        env=env,
        **_given(tree, cert_warning_days=int),
    )
