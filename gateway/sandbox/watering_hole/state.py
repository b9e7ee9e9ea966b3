"""The simulated platform's data (users, conversations, posts) and the events it emits."""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from gateway.errors import RequestError
from gateway.sandbox.watering_hole.config import WateringHoleConfig

Event = dict[str, Any]
ReceiptKind = Literal["delivered", "read", "failed"]

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


class World:
    """Every object of the platform; each change emits its event through `emit`."""

    def __init__(self, config: WateringHoleConfig, emit: Callable[[Event], None]) -> None:
        self.config = config
        self._emit = emit
        self.users: dict[str, User] = {}
        self.conversations: dict[str, Conversation] = {}
        self.posts: dict[str, Post] = {}
        self.messages: dict[str, Message] = {}
        self.account = self.add_user(
            config.account_user_id,
            config.account_handle,
            config.account_display_name,
            f"{config.public_base}/avatars/{config.account_handle}.png",
        )
        for seed in config.users:
            self.add_user(seed.id, seed.handle, seed.display_name, seed.avatar_url)

    def now_ms(self) -> int:
        return int(self.config.clock() * 1000)

    def add_user(self, user_id: str, handle: str, display_name: str, avatar_url: str) -> User:
        """Register (or replace) a user."""
        user = self.users[user_id] = User(user_id, handle, display_name, avatar_url)
        return user

    def user(self, user_id: str) -> User:
        if user_id not in self.users:
            raise SimError(404, "not_found", "unknown user")
        return self.users[user_id]

    def conversation(self, conversation_id: str) -> Conversation:
        if conversation_id not in self.conversations:
            raise SimError(404, "not_found", "unknown conversation")
        return self.conversations[conversation_id]

    def post(self, post_id: str) -> Post:
        if post_id not in self.posts:
            raise SimError(404, "not_found", "unknown post")
        return self.posts[post_id]

    def message(self, message_id: str) -> Message:
        if message_id not in self.messages:
            raise SimError(404, "not_found", "unknown message")
        return self.messages[message_id]

    def emit(self, type_: str, data: dict[str, Any], *, echo: bool = False) -> Event:
        """Create an event and hand it to the delivery queue."""
        event: Event = {
            "id": new_id("evt_"),
            "type": type_,
            "occurred_at_ms": self.now_ms(),
            "data": data,
        }
        if echo:
            event["echo"] = True
        self._emit(event)
        return event

    def open_conversation(self, user_id: str) -> Conversation:
        """Return the user's open conversation with the brand, starting one if none."""
        self.user(user_id)
        if user_id == self.account.id:
            raise SimError(400, "invalid_request", "the account cannot talk to itself")
        for conv in reversed(self.conversations.values()):
            if conv.user_id == user_id and not conv.closed:
                return conv
        conv = Conversation(new_id("cnv_"), user_id, self.account.id, self.now_ms())
        self.conversations[conv.id] = conv
        return conv

    def add_message(
        self, conv: Conversation, author_id: str, text: str, attachments: Sequence[Attachment]
    ) -> Message:
        """Append a message to an open conversation and emit `message.created`."""
        if conv.closed:
            raise SimError(409, "conversation_closed", "the conversation is closed")
        author = self.user(author_id)
        msg_id = new_id("msg_")
        msg = Message(
            msg_id,
            conv.id,
            author.id,
            text,
            list(attachments),
            self.now_ms(),
            f"{self.config.public_base}/c/{conv.id}/{msg_id}",
        )
        conv.messages.append(msg)
        self.messages[msg.id] = msg
        data = {
            "conversation": {"id": conv.id},
            "message": {
                "id": msg.id,
                "text": msg.text,
                "sent_at_ms": msg.created_at_ms,
                "attachments": [a.as_json() for a in msg.attachments],
            },
            "sender": author.profile(),
        }
        self.emit("message.created", data, echo=author.id == self.account.id)
        return msg

    def add_post(self, author_id: str, title: str, body: str) -> Post:
        """Publish a post and emit `post.created`."""
        author = self.user(author_id)
        post_id = new_id("pst_")
        post = Post(
            post_id, author.id, title, body, self.now_ms(), f"{self.config.public_base}/p/{post_id}"
        )
        self.posts[post.id] = post
        data = {
            "post": {
                "id": post.id,
                "title": post.title,
                "body": post.body,
                "permalink": post.permalink,
                "created_at_ms": post.created_at_ms,
            },
            "author": author.profile(),
        }
        self.emit("post.created", data, echo=author.id == self.account.id)
        return post

    def add_comment(
        self, post: Post, author_id: str, body: str, parent_comment_id: str | None
    ) -> Comment:
        """Comment on a post (or on one of its comments) and emit `comment.created`."""
        author = self.user(author_id)
        if parent_comment_id is not None and all(c.id != parent_comment_id for c in post.comments):
            raise SimError(404, "not_found", "unknown comment")
        cmt_id = new_id("cmt_")
        comment = Comment(
            cmt_id,
            post.id,
            parent_comment_id,
            author.id,
            body,
            self.now_ms(),
            f"{self.config.public_base}/p/{post.id}#{cmt_id}",
        )
        post.comments.append(comment)
        data = {
            "comment": {
                "id": comment.id,
                "post_id": post.id,
                "parent_comment_id": parent_comment_id,
                "body": body,
                "permalink": comment.permalink,
                "created_at_ms": comment.created_at_ms,
            },
            "author": author.profile(),
        }
        self.emit("comment.created", data, echo=author.id == self.account.id)
        return comment

    def receipt(self, message_id: str, kind: ReceiptKind, reason: str | None = None) -> Message:
        """Mark a message the brand sent delivered, read or failed, and emit the event."""
        msg = self.message(message_id)
        if msg.author_id != self.account.id:
            raise SimError(400, "invalid_request", "receipts exist only for the brand's messages")
        at_ms = self.now_ms()
        msg.status, msg.status_at_ms = kind, at_ms
        data: dict[str, Any] = {
            "conversation": {"id": msg.conversation_id},
            "message_id": msg.id,
            "at_ms": at_ms,
        }
        if kind == "failed":
            msg.failure_reason = data["reason"] = reason or "undeliverable"
        self.emit(f"message.{kind}", data)
        return msg

    def close(self, conv: Conversation, by: Literal["user", "account"]) -> None:
        """Close a conversation and emit `conversation.closed`."""
        if conv.closed:
            raise SimError(409, "conversation_closed", "the conversation is already closed")
        conv.closed, conv.closed_by, conv.closed_at_ms = True, by, self.now_ms()
        conv.typing = False
        data = {"conversation": {"id": conv.id}, "closed_by": by, "at_ms": conv.closed_at_ms}
        self.emit("conversation.closed", data)

    def set_typing(self, conv: Conversation, on: bool) -> None:
        """Record the brand's typing indicator (no event: the platform sends none)."""
        if conv.closed:
            raise SimError(409, "conversation_closed", "the conversation is closed")
        conv.typing, conv.typing_at_ms = on, self.now_ms()

    def as_json(self) -> dict[str, Any]:
        return {
            "account": {"id": self.config.account_id, "user": self.account.profile()},
            "users": [u.profile() for u in self.users.values()],
            "conversations": [c.as_json() for c in self.conversations.values()],
            "posts": [p.as_json() for p in self.posts.values()],
        }
