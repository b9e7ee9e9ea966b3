"""The simulated platform's world: its records, what changes them, and the events it emits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from gateway.sandbox.watering_hole.config import WateringHoleConfig
from gateway.sandbox.watering_hole.records import (
    Attachment,
    Comment,
    Conversation,
    Message,
    Post,
    SimError,
    User,
    new_id,
)

Event = dict[str, Any]
ReceiptKind = Literal["delivered", "read", "failed"]


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
