"""The simulated platform's records (users, messages, conversations, posts) as it stores them."""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from gateway.errors import RequestError

_ALPHABET = string.ascii_letters + string.digits
_IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
_FILE_EXTENSIONS = frozenset({".pdf"})


def new_id(prefix: str) -> str:
    """Return a random id such as `msg_4kQ9zT2bXe` (prefix + 10 base62 characters)."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(10))


class SimError(RequestError):
    """A refusal of the simulated platform: HTTP status plus its stable error code."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, code=code, headers=headers)
        self.status = status


def _extension(url: str, name: str) -> str:
    for candidate in (name, urlsplit(url).path):
        dot = candidate.rfind(".")
        if dot != -1 and "/" not in candidate[dot:]:
            return candidate[dot:].lower()
    return ""


@dataclass
class User:
    """A platform user (a customer or the brand's account user)."""

    id: str
    handle: str
    display_name: str
    avatar_url: str

    def profile(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "handle": self.handle,
            "display_name": self.display_name,
            "avatar_url": self.avatar_url,
        }


@dataclass
class Attachment:
    """A file on a direct message."""

    kind: Literal["image", "file"]
    url: str
    name: str
    size_bytes: int | None

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Attachment:
        """Build from `{url, name?, size_bytes?, kind?}`; BadRequest-style SimError if malformed."""
        url, name, size = raw.get("url"), raw.get("name"), raw.get("size_bytes")
        if not isinstance(url, str) or not url:
            raise SimError(400, "invalid_request", "attachment url must be a non-empty string")
        if name is None:
            name = urlsplit(url).path.rsplit("/", 1)[-1] or "file"
        if not isinstance(name, str):
            raise SimError(400, "invalid_request", "attachment name must be a string")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise SimError(400, "invalid_request", "attachment size_bytes must be an integer")
        kind: Literal["image", "file"] = "image" if raw.get("kind") == "image" else "file"
        if raw.get("kind") not in ("image", "file") and _extension(url, name) in _IMAGE_EXTENSIONS:
            kind = "image"
        return cls(kind, url, name, size)

    def allowed_on_dm(self, max_bytes: int) -> bool:
        """Tell whether the API accepts it on a DM: images and PDFs, size unknown or small."""
        ext = _extension(self.url, self.name)
        if ext not in _IMAGE_EXTENSIONS | _FILE_EXTENSIONS:
            return False
        return self.size_bytes is None or self.size_bytes <= max_bytes

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "url": self.url,
            "name": self.name,
            "size_bytes": self.size_bytes,
        }


@dataclass
class Message:
    """One direct message; receipts apply to those the brand wrote."""

    id: str
    conversation_id: str
    author_id: str
    text: str
    attachments: list[Attachment]
    created_at_ms: int
    permalink: str
    status: Literal["sent", "delivered", "read", "failed"] = "sent"
    status_at_ms: int | None = None
    failure_reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "author_id": self.author_id,
            "text": self.text,
            "attachments": [a.as_json() for a in self.attachments],
            "created_at_ms": self.created_at_ms,
            "permalink": self.permalink,
            "status": self.status,
            "status_at_ms": self.status_at_ms,
            "failure_reason": self.failure_reason,
        }


@dataclass
class Conversation:
    """A private chat between one user and the brand's account."""

    id: str
    user_id: str
    account_user_id: str
    created_at_ms: int
    messages: list[Message] = field(default_factory=list)
    closed: bool = False
    closed_by: str | None = None
    closed_at_ms: int | None = None
    typing: bool = False  # the brand's typing indicator
    typing_at_ms: int | None = None

    @property
    def participants(self) -> list[str]:
        return [self.user_id, self.account_user_id]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "participants": self.participants,
            "created_at_ms": self.created_at_ms,
            "closed": self.closed,
            "closed_by": self.closed_by,
            "closed_at_ms": self.closed_at_ms,
            "typing": {"on": self.typing, "at_ms": self.typing_at_ms},
            "messages": [m.as_json() for m in self.messages],
        }


@dataclass
class Comment:
    """A comment under a post, possibly replying to another comment."""

    id: str
    post_id: str
    parent_comment_id: str | None
    author_id: str
    body: str
    created_at_ms: int
    permalink: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "post_id": self.post_id,
            "parent_comment_id": self.parent_comment_id,
            "author_id": self.author_id,
            "body": self.body,
            "created_at_ms": self.created_at_ms,
            "permalink": self.permalink,
        }


@dataclass
class Post:
    """A public post on the board."""

    id: str
    author_id: str
    title: str
    body: str
    created_at_ms: int
    permalink: str
    comments: list[Comment] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """Return the post with its comments nested as a tree (`replies`)."""
        children: dict[str | None, list[dict[str, Any]]] = {}
        nodes: dict[str, dict[str, Any]] = {}
        for c in self.comments:
            nodes[c.id] = node = {**c.as_json(), "replies": []}
            children.setdefault(c.parent_comment_id, []).append(node)
        for cid, node in nodes.items():
            node["replies"] = children.get(cid, [])
        return {
            "id": self.id,
            "author_id": self.author_id,
            "title": self.title,
            "body": self.body,
            "created_at_ms": self.created_at_ms,
            "permalink": self.permalink,
            "comments": children.get(None, []),
        }
