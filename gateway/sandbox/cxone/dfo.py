"""The DFO 3.0 API the gateway calls: messages, statuses, contacts, channels."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from gateway.errors import NotFound
from gateway.sandbox.cxone import validate
from gateway.sandbox.cxone.auth import TokenStore, bearer
from gateway.sandbox.cxone.config import CxoneSimConfig
from gateway.sandbox.cxone.records import Contact
from gateway.sandbox.cxone.responses import Invalid, json_response, read_json
from gateway.sandbox.cxone.state import SimState


def default_channel(channel_id: str, integration_id: str | None) -> dict[str, Any]:
    """Return a private 1:1 channel body able to do everything (for pre-registration)."""
    return {
        "id": channel_id,
        "idOnExternalPlatform": channel_id,
        "channelIntegrationId": integration_id or "sim-integration",
        "realExternalPlatformId": "custom",
        "name": channel_id,
        "isPrivate": True,
        "hasTreeStructure": False,
        **dict.fromkeys(validate.CHANNEL_FLAGS, True),
        "contentFormat": "plain",
    }


class DfoApi:
    """Handlers under /dfo/3.0; every one needs a valid bearer token."""

    def __init__(self, config: CxoneSimConfig, state: SimState, tokens: TokenStore) -> None:
        self.config = config
        self.state = state
        self.tokens = tokens

    def _channel(self, request: web.Request) -> dict[str, Any]:
        channel_id = request.match_info["channelId"]
        channel = self.state.channels.get(channel_id)
        if channel is None:
            raise NotFound(f"channel {channel_id!r} does not exist", code="channel_not_found")
        return channel

    def _contact(self, request: web.Request) -> Contact:
        number = request.match_info["contactNumber"]
        contact = self.state.contacts.get(number)
        if contact is None:
            raise NotFound(f"contact {number!r} does not exist", code="contact_not_found")
        return contact

    async def create_message(self, request: web.Request) -> web.StreamResponse:
        """POST /dfo/3.0/channels/{channelId}/messages."""
        bearer(request, self.tokens)
        channel = self._channel(request)
        body = await read_json(request)
        problems = validate.create_message(body)
        if problems:
            raise Invalid("the message", problems)
        message, contact = self.state.add_inbound(channel["id"], body)
        return json_response(
            {
                "consumerContact": {
                    "id": contact.id,
                    "status": contact.status,
                    "channelId": channel["id"],
                    "threadIdOnExternalPlatform": message.thread_id,
                },
                "message": {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{message.seq}")),
                    "idOnExternalPlatform": message.message_id,
                    "threadIdOnExternalPlatform": message.thread_id,
                    "direction": body["direction"],
                    "createdAtWithMilliseconds": body["createdAtWithMilliseconds"],
                },
            }
        )

    async def message_status(self, request: web.Request) -> web.StreamResponse:
        """PUT /dfo/3.0/channels/{channelId}/messages/{messageId}/status."""
        bearer(request, self.tokens)
        channel = self._channel(request)
        message_id = request.match_info["messageId"]
        body = await read_json(request)
        problems = validate.run(validate.message_status, body)
        if problems:
            raise Invalid("the message status", problems)
        if self.config.strict_status_ids and not self.state.knows_message(
            channel["id"], message_id
        ):
            raise NotFound(f"message {message_id!r} does not exist", code="message_not_found")
        update = self.state.add_status(channel["id"], message_id, body)
        return json_response(
            {"idOnExternalPlatform": message_id, "status": update.status, "known": update.known}
        )

    async def contact_status(self, request: web.Request) -> web.StreamResponse:
        """PUT /dfo/3.0/contacts/{contactNumber}/status."""
        bearer(request, self.tokens)
        contact = self._contact(request)
        body = await read_json(request)
        problems = validate.run(validate.contact_status, body)
        if problems:
            raise Invalid("the contact status", problems)
        self.state.change_contact(contact, body["status"])
        return json_response({"id": contact.id, "status": contact.status})

    async def contact_abandon(self, request: web.Request) -> web.StreamResponse:
        """POST /dfo/3.0/contacts/{contactNumber}/abandon."""
        bearer(request, self.tokens)
        contact = self._contact(request)
        self.state.change_contact(contact, None)
        return json_response({"id": contact.id, "status": contact.status})

    def upsert_channel(self, body: Any) -> tuple[dict[str, Any], bool]:
        """Validate and store a channel body; return it and whether it was new."""
        problems = validate.run(validate.channel, body)
        wanted = self.config.integration_id
        if not problems and wanted is not None and body["channelIntegrationId"] != wanted:
            problems.append(f"channelIntegrationId: unknown integration (this tenant has {wanted})")
        if problems:
            raise Invalid("the channel", problems)
        created = body["id"] not in self.state.channels
        self.state.channels[body["id"]] = dict(body)
        self.state.tick()
        return self.state.channels[body["id"]], created

    async def channel_upsert(self, request: web.Request) -> web.StreamResponse:
        """POST /dfo/3.0/channels (create or update by id)."""
        bearer(request, self.tokens)
        channel, _ = self.upsert_channel(await read_json(request))
        return json_response(channel)

    async def channel_list(self, request: web.Request) -> web.StreamResponse:
        """GET /dfo/3.0/channels: a JSON array; query parameters filter on equal fields."""
        bearer(request, self.tokens)
        return json_response(
            [c for c in self.state.channels.values() if _matches(c, request.query)]
        )

    async def channel_delete(self, request: web.Request) -> web.StreamResponse:
        """DELETE /dfo/3.0/channels/{channelId}."""
        bearer(request, self.tokens)
        channel = self._channel(request)
        del self.state.channels[channel["id"]]
        self.state.tick()
        return web.Response(status=204)


def _matches(channel: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    for key, wanted in query.items():
        if key not in channel:
            continue  # paging and unknown filters are ignored
        value = channel[key]
        text = str(value).lower() if isinstance(value, bool) else str(value)
        if text != wanted:
            return False
    return True


def preregistered(config: CxoneSimConfig) -> list[dict[str, Any]]:
    """Return the channels of the config as full, validated bodies."""
    channels = []
    for item in config.channels:
        if isinstance(item, str):
            body = default_channel(item, config.integration_id)
        else:
            if not isinstance(item.get("id"), str):
                raise ValueError("a pre-registered channel needs a string id")
            body = {**default_channel(item["id"], config.integration_id), **item}
        problems = validate.run(validate.channel, body)
        if problems:
            raise ValueError(f"pre-registered channel {body['id']!r}: " + "; ".join(problems))
        channels.append(body)
    return channels
