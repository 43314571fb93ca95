"""A receiver that speaks raw bytes: for answers no HTTP server library would send.

Each connection's request is read (head and ``Content-Length`` body) and recorded, then the
test's script writes whatever it likes: a broken status line, an endless body, a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

# Writes the answer; the connection is closed once it returns.
Script = Callable[["Answer"], Awaitable[None]]


@dataclass
class Answer:
    """The receiving end of one connection, as a script drives it."""

    writer: asyncio.StreamWriter
    written: int = 0
    # The request read on this connection (head and body), empty when reads_request is False.
    request: bytes = b""

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        self.written += len(data)
        await self.writer.drain()

    def reset(self) -> None:
        """Close with a TCP reset (RST) rather than an orderly FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


@dataclass
class RawReceiver:
    script: Script
    tls: ssl.SSLContext | None = None
    # False: the script starts as soon as a client connects, before it has sent anything.
    reads_request: bool = True
    requests: list[bytes] = field(default_factory=list)
    # Per connection: how many bytes the script wrote before it ended or the client left.
    written: list[int] = field(default_factory=list)
    # Set when a script ends because the client closed the connection on it.
    client_left: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str = "/hook") -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        answer = Answer(writer)
        try:
            if self.reads_request:
                head = await reader.readuntil(b"\r\n\r\n")
                body = await reader.readexactly(_content_length(head))
                answer.request = head + body
                self.requests.append(answer.request)
            await self.script(answer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            self.client_left.set()
        except asyncio.CancelledError:
            pass  # the test is over; this task ends here
        finally:
            self.written.append(answer.written)
            self._tasks.discard(task)
            with contextlib.suppress(Exception):
                writer.close()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def self_signed_tls(directory: Path, *, expired: bool = False) -> ssl.SSLContext:
    """A server context with a fresh self-signed certificate for 127.0.0.1 (no CA trusts it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    start, end = (
        (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1))
        if expired
        else (now - datetime.timedelta(days=1), now + datetime.timedelta(days=1))
    )
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context
