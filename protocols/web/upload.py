"""HTTP File Upload (XEP-0363), the HTTP half: slots, the files, and ``/upload`` on the web
listener.

An XMPP client asks the upload service (:mod:`protocols.xmpp.upload`) for a slot; the slot
is a PUT URL holding a secret token (single use, valid ``[upload] slot_timeout`` seconds, for
that one file's size and type) and a GET URL naming the file by an unguessable id.  The PUT
must carry exactly the size and type the slot was made for.  Files live in
``<data dir>/uploads/<id>/`` (the file and a ``meta.json``), count towards their account's
``quota`` until they expire (``expire_after``; swept hourly and on start), and are served
with headers that keep a browser from running them as part of this site.

No other resource of the web listener takes a request body, so :class:`LimitedRequest`
refuses any body past ``max_file_size`` (or of unknown length) before it is stored.
"""

from __future__ import annotations

import fnmatch
import json
import os
import secrets
import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from twisted.internet import threads
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.static import File

from chatserver.core.names import casefold

log = Logger()

FILENAME_MAX = 255
META = "meta.json"
SWEEP_INTERVAL = 3600.0


class SlotRefused(Exception):
    """Why a slot is not given: ``why`` is ``too-large``, ``quota``, ``type`` or ``bad``."""

    def __init__(self, why: str, text: str) -> None:
        super().__init__(text)
        self.why = why
        self.text = text


@dataclass(slots=True)
class Slot:
    token: str
    file_id: str
    account: str
    filename: str
    size: int
    content_type: str
    expires: float
    put_url: str
    get_url: str


@dataclass(slots=True)
class Stored:
    account: str
    size: int
    content_type: str
    created: float


def clean_filename(name: str) -> str | None:
    """The file name as stored and in the URL, or None when it is not a plain file name."""
    name = unicodedata.normalize("NFC", name.strip())
    if (
        not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or len(name.encode("utf-8")) > FILENAME_MAX
        or any(unicodedata.category(ch).startswith("C") for ch in name)
    ):
        return None
    return name


def base_url(config: Any) -> str:
    """Where clients reach the web listener: ``[upload] base_url``, else built from
    ``[xmpp] domain`` and ``[web]``'s HTTPS port (or its plain port with ``plain_http``)."""
    upload = config.upload
    if upload.base_url:
        return upload.base_url.rstrip("/")
    host = config.xmpp.domain
    if upload.plain_http or not config.web.tls_port:
        return f"http://{host}:{config.web.port}"
    return f"https://{host}:{config.web.tls_port}"


class UploadStore:
    """Slots and files; ``clock`` gives ``seconds()`` (the reactor in the server)."""

    def __init__(self, directory: Path, config: Any, clock: Any) -> None:
        self.directory = directory
        self.clock = clock
        self.slots: dict[str, Slot] = {}
        self.files: dict[str, Stored] = {}
        # casefolded account -> bytes held: stored files and slots not yet used.
        self.usage: dict[str, int] = {}
        self.apply(config)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._load()
        self._sweeper: LoopingCall | None = None

    def apply(self, config: Any) -> None:
        self.config = config.upload
        self.base_url = base_url(config)

    def start(self) -> None:
        self._sweeper = LoopingCall(self.sweep)
        self._sweeper.clock = self.clock
        self._sweeper.start(SWEEP_INTERVAL, now=True)

    def stop(self) -> None:
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()

    # -- slots --------------------------------------------------------------------------------

    def request(self, account: str, filename: str, size: int, content_type: str) -> Slot:
        """A slot for ``account``'s file, or :class:`SlotRefused`."""
        cfg = self.config
        name = clean_filename(filename)
        if name is None:
            raise SlotRefused("bad", "the file name is not a plain file name")
        if size < 0:
            raise SlotRefused("bad", "the size is a number of bytes")
        if size > cfg.max_file_size:
            raise SlotRefused("too-large", f"files may be {cfg.max_file_size} bytes at most")
        if cfg.allowed_types and not any(
            fnmatch.fnmatchcase(content_type, pattern) for pattern in cfg.allowed_types
        ):
            raise SlotRefused("type", f"{content_type} files may not be uploaded here")
        self._expire_slots()
        key = casefold(account)
        held = self.usage.get(key, 0)
        if held + size > cfg.quota and self.files:
            # Files that expired since the last sweep no longer count.
            self.sweep()
            held = self.usage.get(key, 0)
        if held + size > cfg.quota:
            raise SlotRefused(
                "quota",
                f"your uploads would take {held + size} bytes; the quota is {cfg.quota}",
            )
        token = secrets.token_urlsafe(24)
        file_id = secrets.token_urlsafe(16)
        path = f"{file_id}/{quote(name, safe='')}"
        slot = Slot(
            token=token,
            file_id=file_id,
            account=account,
            filename=name,
            size=size,
            content_type=content_type,
            expires=self.clock.seconds() + cfg.slot_timeout,
            put_url=f"{self.base_url}/upload/put/{token}/{path}",
            get_url=f"{self.base_url}/upload/{path}",
        )
        self.slots[token] = slot
        self.usage[key] = held + size
        return slot

    def slot(self, token: str) -> Slot | None:
        """The slot of a PUT URL's token (None if unknown, used or expired)."""
        self._expire_slots()
        return self.slots.get(token)

    def use(self, slot: Slot) -> None:
        """The slot's file arrived: its URL may not be used again."""
        if self.slots.pop(slot.token, None) is not None:
            self._release(slot.account, slot.size)

    def _expire_slots(self) -> None:
        now = self.clock.seconds()
        for token in [t for t, s in self.slots.items() if s.expires <= now]:
            slot = self.slots.pop(token)
            self._release(slot.account, slot.size)

    def _release(self, account: str, size: int) -> None:
        key = casefold(account)
        left = self.usage.get(key, 0) - size
        if left > 0:
            self.usage[key] = left
        else:
            self.usage.pop(key, None)

    # -- files --------------------------------------------------------------------------------

    def store(self, slot: Slot, body: IO[bytes]) -> Any:
        """Write the file (in a thread: it may be large); a Deferred."""
        folder = self.directory / slot.file_id
        meta = {
            "account": slot.account,
            "size": slot.size,
            "content_type": slot.content_type,
            "created": self.clock.seconds(),
            "filename": slot.filename,
        }
        key = casefold(slot.account)
        # Counted now, so that slots asked for meanwhile see it.
        self.usage[key] = self.usage.get(key, 0) + slot.size

        def write() -> None:
            folder.mkdir(mode=0o700)
            body.seek(0)
            with open(folder / slot.filename, "xb") as out:
                shutil.copyfileobj(body, out)
            (folder / META).write_text(json.dumps(meta))

        def done(_: Any) -> None:
            self.files[slot.file_id] = Stored(
                slot.account, slot.size, slot.content_type, meta["created"]
            )

        def failed(f: Any) -> Any:
            self._release(slot.account, slot.size)
            shutil.rmtree(folder, ignore_errors=True)
            return f

        return threads.deferToThread(write).addCallbacks(done, failed)

    def find(self, file_id: str, filename: str) -> tuple[Path, Stored] | None:
        stored = self.files.get(file_id)
        if stored is None or self._expired(stored):
            return None
        path = self.directory / file_id / filename
        if clean_filename(filename) != filename or not path.is_file():
            return None
        return path, stored

    def _expired(self, stored: Stored) -> bool:
        after = self.config.expire_after
        return bool(after) and stored.created + after <= self.clock.seconds()

    def sweep(self) -> None:
        """Delete expired files (few a sweep on a small server; the listing is in memory)."""
        for file_id, stored in list(self.files.items()):
            if self._expired(stored):
                del self.files[file_id]
                self._release(stored.account, stored.size)
                shutil.rmtree(self.directory / file_id, ignore_errors=True)
        self._expire_slots()

    def _load(self) -> None:
        for folder in self.directory.iterdir():
            try:
                meta = json.loads((folder / META).read_text())
                stored = Stored(
                    str(meta["account"]),
                    int(meta["size"]),
                    str(meta["content_type"]),
                    float(meta["created"]),
                )
            except (OSError, ValueError, KeyError, TypeError):
                # A write that never finished: nothing points at it.
                shutil.rmtree(folder, ignore_errors=True)
                continue
            self.files[folder.name] = stored
            key = casefold(stored.account)
            self.usage[key] = self.usage.get(key, 0) + stored.size


class LimitedRequest(Request):
    """A request whose body may not pass ``limit()`` bytes: past it (or of unknown length),
    the body is thrown away as it arrives and the request answered 413."""

    limit: Any = staticmethod(lambda: 0)
    too_large = False

    def gotLength(self, length: int | None) -> None:
        # No length: no body, or a chunked one, whose size nobody knows before it is read.
        chunked = length is None and self.requestHeaders.hasHeader(b"transfer-encoding")
        if (length is None and not chunked) or (length is not None and length <= self.limit()):
            super().gotLength(length)
            return
        self.too_large = True
        self.content = _Discard()  # type: ignore[assignment]

    def process(self) -> None:
        if self.too_large:
            self.setResponseCode(http.REQUEST_ENTITY_TOO_LARGE)
            self.setHeader(b"content-type", b"text/plain; charset=utf-8")
            self.write(b"request body too large\n")
            self.finish()
            return
        super().process()


class _Discard:
    """A request body that keeps nothing (read back as empty)."""

    def write(self, data: bytes) -> None:
        pass

    def seek(self, *args: Any) -> int:
        return 0

    def tell(self) -> int:
        return 0

    def read(self, *args: Any) -> bytes:
        return b""

    def close(self) -> None:
        pass


class UploadResource(Resource):
    """``/upload/put/<token>/<id>/<name>`` (PUT) and ``/upload/<id>/<name>`` (GET, HEAD)."""

    isLeaf = True

    def __init__(self, store: UploadStore) -> None:
        super().__init__()
        self.store = store

    def _parts(self, request: Request) -> list[str]:
        return [p.decode("utf-8", "replace") for p in request.postpath or ()]

    def render_PUT(self, request: Request) -> bytes | int:
        parts = self._parts(request)
        if len(parts) != 4 or parts[0] != "put":
            return _plain(request, http.NOT_FOUND, "no such upload slot")
        _, token, file_id, filename = parts
        slot = self.store.slot(token)
        if slot is None or slot.file_id != file_id or slot.filename != filename:
            return _plain(request, http.FORBIDDEN, "this upload slot is unknown, used or expired")
        length = request.getHeader("content-length")
        if (
            length is None
            or not (length.isascii() and length.isdigit())
            or int(length) != slot.size
        ):
            return _plain(
                request, http.BAD_REQUEST, f"Content-Length must be the slot's size, {slot.size}"
            )
        content_type = (request.getHeader("content-type") or "").strip()
        if content_type.lower() != slot.content_type.lower():
            return _plain(
                request,
                http.BAD_REQUEST,
                f"Content-Type must be the slot's type, {slot.content_type}",
            )
        body: Any = request.content
        body.seek(0, os.SEEK_END)
        if body.tell() != slot.size:
            return _plain(request, http.BAD_REQUEST, "the body is not the slot's size")
        # A PUT that was refused may be tried again while the slot lasts; a stored one not.
        self.store.use(slot)

        def done(_: Any) -> None:
            if request.channel is None:
                return
            request.setResponseCode(http.CREATED)
            request.finish()

        def failed(f: Any) -> None:
            log.failure("storing an upload", f)
            if request.channel is not None:
                request.setResponseCode(http.INTERNAL_SERVER_ERROR)
                request.finish()

        self.store.store(slot, body).addCallbacks(done, failed)
        return NOT_DONE_YET

    def render_GET(self, request: Request) -> bytes | int:
        parts = self._parts(request)
        found = self.store.find(*parts) if len(parts) == 2 else None
        if found is None:
            return _plain(request, http.NOT_FOUND, "no such file (or it has expired)")
        path, stored = found
        # Served as data, never as a page of this site: a shared HTML file must not run
        # scripts with the web client's origin.
        request.setHeader(b"content-security-policy", b"default-src 'none'; sandbox")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", b"public, max-age=86400, immutable")
        request.setHeader(b"access-control-allow-origin", b"*")
        served = File(str(path), defaultType=stored.content_type)
        # The type the uploader declared, never one guessed from the name (nor a compression).
        served.contentTypes = {}
        served.contentEncodings = {}
        return served.render(request)

    render_HEAD = render_GET


def _plain(request: Request, code: int, text: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return (text + "\n").encode("utf-8")
