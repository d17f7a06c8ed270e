"""The image upload's body: `multipart/form-data` read as it streams in, with a hard limit.

Starlette's form parser spools any size to a temporary file before the endpoint runs; this one
counts while it reads and stops at the limit, so a client sending 6 MiB has the connection answered
with 413 after 5 MiB, and one declaring more than the limit in `Content-Length` is answered at once,
before a byte of the body is read. The file part is kept in memory (at most 5 MiB).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from app.core.errors import PayloadTooLargeError, UnsupportedMediaTypeError, ValidationFailedError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_FILE_BYTES = 5 * 1024 * 1024
# The file plus room for the multipart framing and the other fields.
MAX_BODY_BYTES = MAX_FILE_BYTES + 64 * 1024
_MAX_FIELD_BYTES = 4 * 1024
_MAX_PARTS = 8


class FileTooLargeError(PayloadTooLargeError):
    def __init__(self) -> None:
        super().__init__(
            f"The file is over the limit of {MAX_FILE_BYTES} bytes",
            extra={"max_bytes": MAX_FILE_BYTES},
        )


def _invalid(loc: list[str | int], msg: str, type_: str) -> ValidationFailedError:
    return ValidationFailedError(
        "The form is not valid", errors=[{"loc": loc, "msg": msg, "type": type_}]
    )


@dataclass
class _Part:
    name: str = ""
    is_file: bool = False
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)


@dataclass(frozen=True, slots=True)
class ImageForm:
    file: bytes
    alt_text: str | None


class _FormReader:
    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self._part = _Part()
        self._header_field = b""
        self._header_value = b""

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        if len(self.parts) >= _MAX_PARTS:
            raise _invalid(["body"], f"At most {_MAX_PARTS} form parts", "too_many_parts")
        self._part = _Part()
        self.parts.append(self._part)

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._part.headers[self._header_field.lower()] = self._header_value
        self._header_field = self._header_value = b""

    def on_headers_finished(self) -> None:
        disposition, options = parse_options_header(
            self._part.headers.get(b"content-disposition", b"")
        )
        if disposition != b"form-data" or b"name" not in options:
            raise _invalid(["body"], "Every part needs a form-data name", "multipart")
        self._part.name = options[b"name"].decode("utf-8", "replace")
        self._part.is_file = b"filename" in options

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        part.data += data[start:end]
        limit = MAX_FILE_BYTES if part.name == "file" else _MAX_FIELD_BYTES
        if len(part.data) > limit:
            if part.name == "file":
                raise FileTooLargeError
            raise _invalid(["body", part.name], "Field too long", "string_too_long")


def _boundary(request: Request) -> bytes:
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise UnsupportedMediaTypeError("Send the image as multipart/form-data with a `file` part")
    return boundary


async def read_image_form(request: Request) -> ImageForm:
    """`file` and `alt_text?` of the upload, read under the limits (413 past them)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(
            f"Request body over the limit of {MAX_BODY_BYTES} bytes",
            extra={"max_bytes": MAX_FILE_BYTES},
        )
    boundary = _boundary(request)
    reader = _FormReader()
    parser = MultipartParser(boundary, reader.callbacks())
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > MAX_BODY_BYTES:
                raise FileTooLargeError
            parser.write(chunk)
        parser.finalize()
    except FormParserError:
        raise _invalid(["body"], "The multipart body is malformed", "multipart") from None
    return _form_of(reader.parts)


def _form_of(parts: list[_Part]) -> ImageForm:
    by_name: dict[str, _Part] = {}
    for part in parts:
        if part.name in by_name:
            raise _invalid(["body", part.name], "Sent more than once", "multipart")
        by_name[part.name] = part
    unknown = sorted(set(by_name) - {"file", "alt_text"})
    if unknown:
        raise ValidationFailedError(
            "The form is not valid",
            errors=[
                {
                    "loc": ["body", name],
                    "msg": "Extra inputs are not permitted",
                    "type": "extra_forbidden",
                }
                for name in unknown
            ],
        )
    file = by_name.get("file")
    if file is None or not file.is_file:
        raise _invalid(["body", "file"], "Field required", "missing")
    if not file.data:
        raise _invalid(["body", "file"], "The file is empty", "value_error")
    alt_text: str | None = None
    if "alt_text" in by_name:
        try:
            alt_text = bytes(by_name["alt_text"].data).decode("utf-8").strip() or None
        except UnicodeDecodeError:
            raise _invalid(["body", "alt_text"], "Not UTF-8 text", "string_unicode") from None
        if alt_text is not None and len(alt_text) > 500:
            raise _invalid(
                ["body", "alt_text"], "String should have at most 500 characters", "string_too_long"
            )
    return ImageForm(file=bytes(file.data), alt_text=alt_text)
