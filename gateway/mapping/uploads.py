"""Outbound uploads: a route's `upload:` step, sent once per attachment before the reply.

CXone's attachment URLs are short-lived, and many platforms take a file only as an
upload that returns a media id. A route with `upload:` has the runtime fetch each
attachment at once (size-limited, in memory), send it to the platform as multipart or
raw bytes, and read the upload's answer with `result`; the route's request then sees
the list `uploads` (each attachment's fields plus its results).
"""

from __future__ import annotations

import fnmatch
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from gateway.errors import MappingRuntimeError, UnprocessableEntity, UpstreamRejected
from gateway.mapping.expressions import Expr, ExpressionError, compile_or_report, optional_expr
from gateway.mapping.extraction import Extraction
from gateway.mapping.loader import Problems
from gateway.mapping.model import (
    AttachmentLimits,
    FetchedFile,
    PlatformRequest,
    PlatformResponse,
    PlatformSpec,
    UploadIO,
)
from gateway.mapping.request import RequestTemplate, compile_request
from gateway.mapping.templates import OMIT, Node, RenderError, compile_template, render_text
from gateway.mapping.values import to_str

UploadFormat = Literal["multipart", "raw"]
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_TIMEOUT = 30.0
_OWN_KEYS = ("body", "body_format", "file_field", "filename")


@dataclass(frozen=True)
class UploadSpec:
    """A compiled `upload:` step."""

    request: RequestTemplate  # method, path/url, query, headers; the body is built here
    format: UploadFormat
    fields: Node | None  # multipart: the other form fields
    file_field: str
    filename: Node | None
    result: tuple[tuple[str, Expr], ...]
    success: Expr | None
    max_bytes: int | None
    timeout: float

    @cached_property
    def results(self) -> Extraction:
        """`result` as one generated function, numeric id fields as exact text."""
        return Extraction(self.result, exact=True)

    def render(
        self,
        platform: PlatformSpec,
        context: Mapping[str, Any],
        file: FetchedFile,
        filename: str,
    ) -> PlatformRequest:
        """The upload request for one fetched file (RenderError naming the part)."""
        base = self.request.render(platform, context)
        headers = dict(base.headers)
        if self.format == "raw":
            body, kind = file.content, file.content_type
            if any(k.lower() == "content-type" for k in headers):
                return base._replace(body=body)  # the route says which type to send
        else:
            tree = self.fields.render(context) if self.fields is not None else {}
            if not isinstance(tree, dict):
                raise RenderError("upload.request.body: multipart fields must be a mapping")
            name = render_text(self.filename, context) if self.filename else filename
            body, kind = multipart(tree, self.file_field, name, file)
            headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        headers["Content-Type"] = kind
        return base._replace(headers=headers, body=body)


def compile_upload(spec: Mapping[str, Any], where: str, problems: Problems) -> UploadSpec:
    """Compile `upload: {request, result, success, max_bytes, timeout}`."""
    raw = spec["request"]
    form: UploadFormat = raw.get("body_format", "multipart")
    if form == "raw" and "body" in raw:
        problems.add(
            f"{where}/request/body",
            "a raw upload sends the file itself as the body",
            "remove body, or use body_format: multipart",
        )
    return UploadSpec(
        request=compile_request(
            {k: v for k, v in raw.items() if k not in _OWN_KEYS}, f"{where}/request", problems
        ),
        format=form,
        fields=compile_template(
            raw["body"], f"{where}/request/body", problems.add, label="upload.request.body"
        )
        if "body" in raw
        else None,
        file_field=raw.get("file_field", "file"),
        filename=compile_template(
            raw["filename"],
            f"{where}/request/filename",
            problems.add,
            mode="text",
            label="upload.request.filename",
        )
        if "filename" in raw
        else None,
        result=tuple(
            (name, compile_or_report(source, f"{where}/result/{name}", problems.add))
            for name, source in (spec.get("result") or {}).items()
        ),
        success=optional_expr(spec, "success", where, problems.add),
        max_bytes=spec.get("max_bytes"),
        timeout=float(spec.get("timeout", DEFAULT_TIMEOUT)),
    )


async def upload_all(
    mapping: str,
    route: str,
    spec: UploadSpec,
    attachments: Sequence[Mapping[str, Any]],
    context: Mapping[str, Any],
    platform: PlatformSpec,
    limits: AttachmentLimits | None,
    io: UploadIO,
    error_for: Callable[[PlatformResponse], Exception],
) -> list[dict[str, Any]]:
    """Fetch and upload every attachment in order; return the `uploads` list."""
    uploads = []
    max_bytes = spec.max_bytes or (limits.max_bytes if limits else None) or DEFAULT_MAX_BYTES
    for index, attachment in enumerate(attachments):
        url = attachment.get("url")
        if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
            raise UnprocessableEntity(
                f"attachment {index + 1} has no http(s) URL to fetch", code="invalid_attachment"
            )
        file = await io.fetch(url, max_bytes, spec.timeout)
        kind = file.content_type.split(";", 1)[0].strip().lower()
        allowed = limits.content_types if limits else ()
        if allowed and not any(fnmatch.fnmatchcase(kind, p) for p in allowed):
            # what the file really is, not what its name says
            raise UnprocessableEntity(
                f"attachment {index + 1} is {kind}; the channel takes only {', '.join(allowed)}",
                code="attachment_not_allowed",
            )
        filename = _filename(attachment, file, url)
        described = {
            **attachment,
            "filename": filename,
            "content_type": file.content_type,
            "size_bytes": len(file.content),
        }
        try:
            request = spec.render(platform, {**context, "attachment": described}, file, filename)
        except RenderError as exc:
            raise MappingRuntimeError(mapping, route, str(exc)) from None
        response = await io.send(request, index, spec.timeout)
        if not 200 <= response.status < 300:
            raise error_for(response)
        try:
            if spec.success is not None and not spec.success.test(response.scope()):
                raise UpstreamRejected(
                    mapping, f"the platform refused the upload of attachment {index + 1}"
                )
            results = spec.results(response.body)
        except ExpressionError as exc:
            raise MappingRuntimeError(mapping, route, f"upload: {exc}") from None
        uploads.append({**described, **results})
    return uploads


def _filename(attachment: Mapping[str, Any], file: FetchedFile, url: str) -> str:
    for key in ("filename", "friendlyName", "name"):
        value = attachment.get(key)
        if isinstance(value, str) and value:
            return value
    if file.filename:
        return file.filename
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or "attachment"


def multipart(
    fields: Mapping[str, Any], file_field: str, filename: str, file: FetchedFile
) -> tuple[bytes, str]:
    """A multipart/form-data body: the fields, then the file; returns (body, content type)."""
    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for name, value in fields.items():
        if value is None or value is OMIT:
            continue
        text = value if isinstance(value, str) else to_str(value) or ""
        parts.append(_part(boundary, name, None, None) + text.encode() + b"\r\n")
    parts.append(_part(boundary, file_field, filename, file.content_type) + file.content + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _part(boundary: str, name: str, filename: str | None, kind: str | None) -> bytes:
    disposition = f'form-data; name="{_quoted(name)}"'
    if filename is not None:
        disposition += f'; filename="{_quoted(filename)}"'
    head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
    if kind is not None:
        head += f"Content-Type: {kind}\r\n"
    return (head + "\r\n").encode()


def _quoted(text: str) -> str:
    # RFC 7578: no line breaks in a header; a quote would end the parameter
    return text.replace("\r", "").replace("\n", "").replace('"', "%22")
