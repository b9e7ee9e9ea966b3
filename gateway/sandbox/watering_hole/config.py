"""The simulator's frozen configuration and its pre-registered users."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.clock import Clock, system_clock

PUBLIC_BASE = "https://wateringhole.example"


@dataclass(frozen=True)
class UserSeed:
    """A user that exists when the simulator starts."""

    id: str
    handle: str
    display_name: str
    avatar_url: str


def _seed(user_id: str, handle: str, name: str) -> UserSeed:
    return UserSeed(user_id, handle, name, f"{PUBLIC_BASE}/avatars/{handle}.png")


DEFAULT_USERS: tuple[UserSeed, ...] = (
    _seed("usr_zebra", "zara", "Zara Zebra"),
    _seed("usr_lion", "leo", "Leo Lion"),
    _seed("usr_giraffe", "gina", "Gina Giraffe"),
    _seed("usr_hippo", "hugo", "Hugo Hippo"),
    _seed("usr_meerkat", "milo", "Milo Meerkat"),
)


@dataclass(frozen=True)
class WateringHoleConfig:
    """Everything that shapes one simulated Watering Hole account."""

    account_id: str = "acc_jungle"
    account_user_id: str = "usr_jungle"
    account_handle: str = "thejungle"
    account_display_name: str = "The Jungle"
    api_token: str = "wh-sandbox-token"
    webhook_url: str | None = None  # the initial one; `sim.webhook_url` can change later
    webhook_secrets: tuple[str, ...] = ("wh-sandbox-secret",)  # every one signs (rotation)
    verify_token: str = "wh-sandbox-verify"
    users: tuple[UserSeed, ...] = DEFAULT_USERS
    batch_max: int = 100
    retry_schedule: tuple[float, ...] = (10, 60, 600, 3600, 21600)  # after each failure
    delivery_timeout: float = 5.0
    rate_limit_per_second: int = 20
    max_text: int = 1000
    max_attachment_bytes: int = 5 * 1024 * 1024
    idempotency_ttl: float = 24 * 3600
    long_poll_seconds: float = 25.0
    auto_deliver: bool = False  # a background task flushes and retries on its own
    public_base: str = PUBLIC_BASE
    clock: Clock = field(default=system_clock, compare=False)
