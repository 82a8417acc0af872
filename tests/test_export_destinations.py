"""Export destinations against real servers: a folder, an in-process SFTP server (asyncssh) and
moto's S3 server, each on loopback with faults injected the way networks fail.

What must hold everywhere (issue 17, item 3): a reader polling the final name never sees a
partial file; a transient failure is retried and the export arrives whole; a failure that
outlasts the attempts (or a permanent one: a host key that does not match) raises one
`DestinationError` naming the destination and leaves nothing under the final name (for S3:
no object and no pending multipart upload); `rotate` keeps the newest N files of that export
and touches nothing else.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import threading
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from moto.server import ThreadedMotoServer

from bridge_agent.config import Secret
from bridge_agent.config.exports import (
    FolderDestinationSettings,
    S3DestinationSettings,
    SftpDestinationSettings,
)
from bridge_agent.errors import DestinationError
from bridge_agent.export.destinations import (
    Destination,
    FolderDestination,
    destination_for,
    export_file_name,
    newest_first,
)
from bridge_agent.export.destinations.s3 import S3Destination
from bridge_agent.export.destinations.sftp import SftpDestination
from bridge_agent.testing.waiting import until

with warnings.catch_warnings():  # cryptography's DSA deprecation, raised by asyncssh's import
    warnings.filterwarnings("ignore", message=".*DSA.*", category=UserWarning)
    import asyncssh

FAST = {"backoff_base": 0.01, "backoff_cap": 0.05}  # retries without slowing the suite
START = datetime(2026, 12, 6, 2, 0, tzinfo=UTC)


def payload(size: int, seed: bytes = b"x") -> bytes:
    """`size` bytes that differ along the file, so a torn or shifted copy cannot match."""
    block = hashlib.sha256(seed).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def make_file(root: Path, name: str, data: bytes) -> Path:
    path = root / name
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------------------------------------
# Names and rotation shape
# ---------------------------------------------------------------------------------------------


def test_export_file_names_sort_by_time_and_rotation_sees_only_its_own() -> None:
    names = [export_file_name("nightly", START + timedelta(hours=h), ".csv") for h in (0, 25, 3)]
    assert names[0] == "nightly-20261206T020000Z.csv"
    others = [
        "nightly-full-20261207T020000Z.csv",  # another export whose name starts alike
        ".nightly-20261208T020000Z.csv.part",  # a temporary
        "nightly-notes.txt",
        "nightly-20261208T020000Z",  # no suffix: not an export file
    ]
    assert newest_first("nightly", [*names, *others]) == [names[1], names[2], names[0]]
    with pytest.raises(ValueError, match="time zone"):
        export_file_name("nightly", datetime(2026, 12, 6), ".csv")
    with pytest.raises(ValueError, match="plain export file name"):
        export_file_name("../etc", START, ".csv")


# ---------------------------------------------------------------------------------------------
# Folder
# ---------------------------------------------------------------------------------------------


async def test_folder_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "exports"
    destination = FolderDestination(FolderDestinationSettings(target), **FAST)
    assert isinstance(destination, Destination)
    old, new = payload(4 * 1024 * 1024, b"old"), payload(5 * 1024 * 1024 + 17, b"new")
    name = "feed.xml"  # a stable name a feed fetcher polls: replaced whole, never torn
    await destination.deliver(make_file(tmp_path, "a", old), name)

    seen: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                data = (target / name).read_bytes()
            except FileNotFoundError:
                seen.append("absent")
                continue
            seen.append("old" if data == old else "new" if data == new else f"torn {len(data)}")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        await until(lambda: len(seen) >= 2, what="the reader's first reads")
        delivered = await destination.deliver(make_file(tmp_path, "b", new), name)
        count = len(seen)
        await until(lambda: len(seen) >= count + 2, what="reads after the delivery")
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)
    assert set(seen) <= {"old", "new"}, sorted(set(seen))
    assert seen[-1] == "new" and "old" in seen
    assert (delivered.bytes, delivered.attempts) == (len(new), 1)
    assert delivered.location == str(target / name)
    assert sorted(os.listdir(target)) == [name]  # no temporary left behind


async def test_folder_failure_leaves_nothing_and_names_the_destination(tmp_path: Path) -> None:
    target = tmp_path / "exports"
    destination = FolderDestination(FolderDestinationSettings(target, attempts=3), **FAST)
    with pytest.raises(DestinationError) as caught:
        await destination.deliver(tmp_path / "missing.csv", "nightly-20261206T020000Z.csv")
    assert caught.value.permanent  # a missing source will not appear by waiting
    assert caught.value.destination == f"folder {target}"
    assert str(target) in str(caught.value) and "No such file" in str(caught.value)
    assert os.listdir(target) == []


async def test_folder_keeps_the_newest_n(tmp_path: Path) -> None:
    target = tmp_path / "exports"
    destination = FolderDestination(FolderDestinationSettings(target), **FAST)
    source = make_file(tmp_path, "x.csv", b"sku,title\n")
    names = [export_file_name("nightly", START + timedelta(days=d), ".csv") for d in range(5)]
    for name in names:
        await destination.deliver(source, name)
    bystanders = ["nightly-full-20261201T020000Z.csv", "readme.txt"]
    for other in bystanders:
        (target / other).write_text("not ours")
    assert await destination.rotate("nightly", 2) == sorted(names[:3])
    assert sorted(os.listdir(target)) == sorted([*names[3:], *bystanders])
    assert await destination.rotate("nightly", 2) == []
    with pytest.raises(ValueError, match="keep"):
        await destination.rotate("nightly", 0)


# ---------------------------------------------------------------------------------------------
# SFTP: an in-process asyncssh server on 127.0.0.1
# ---------------------------------------------------------------------------------------------


@dataclass
class Faults:
    """What the SFTP server does wrong next: drop connections, refuse writes."""

    drop_connections: int = 0
    fail_writes: int = 0
    connections: int = 0
    posix_rename: bool = True  # False: a server without OpenSSH's posix-rename extension


class _SshServer(asyncssh.SSHServer):  # type: ignore[misc]
    def __init__(self, faults: Faults) -> None:
        self.faults = faults

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.faults.connections += 1
        if self.faults.drop_connections > 0:
            self.faults.drop_connections -= 1
            conn.abort()  # the network drops it before the handshake completes


class _Sftp(asyncssh.SFTPServer):  # type: ignore[misc]
    def __init__(self, chan: Any, root: Path, faults: Faults) -> None:
        super().__init__(chan, chroot=str(root).encode())
        self.faults = faults

    def write(self, file_obj: Any, offset: int, data: bytes) -> Any:
        if self.faults.fail_writes > 0:
            self.faults.fail_writes -= 1
            raise asyncssh.SFTPFailure("injected write failure")
        return super().write(file_obj, offset, data)

    def posix_rename(self, oldpath: bytes, newpath: bytes) -> Any:
        if not self.faults.posix_rename:
            raise asyncssh.SFTPOpUnsupported("posix-rename not supported")
        return super().posix_rename(oldpath, newpath)


@dataclass
class SftpKit:
    root: Path
    out: Path
    faults: Faults
    port: int
    host_key: asyncssh.SSHKey
    client_key: asyncssh.SSHKey
    known_hosts: Path

    def settings(self, **changes: Any) -> SftpDestinationSettings:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "user": "exporter",
            "private_key": Secret(self.client_key.export_private_key().decode()),
            "known_hosts": self.known_hosts,
            "port": self.port,
            "path": "out",
            "attempts": 3,
            "timeout": 10.0,
        }
        return SftpDestinationSettings(**{**values, **changes})

    def destination(self, **changes: Any) -> SftpDestination:
        return SftpDestination(self.settings(**changes), **FAST)


def known_hosts_line(port: int, key: asyncssh.SSHKey) -> str:
    return f"[127.0.0.1]:{port} {key.export_public_key().decode()}"


@pytest.fixture
async def sftp(tmp_path: Path) -> AsyncIterator[SftpKit]:
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    root = tmp_path / "sftp-root"
    (root / "out").mkdir(parents=True)
    faults = Faults()
    server = await asyncssh.listen(
        "127.0.0.1",
        0,
        server_host_keys=[host_key],
        authorized_client_keys=asyncssh.import_authorized_keys(
            client_key.export_public_key().decode()
        ),
        server_factory=lambda: _SshServer(faults),
        sftp_factory=lambda chan: _Sftp(chan, root, faults),
        allow_scp=False,
    )
    port = server.get_port()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_line(port, host_key))
    try:
        yield SftpKit(root, root / "out", faults, port, host_key, client_key, known_hosts)
    finally:
        server.close()
        await server.wait_closed()


async def test_sftp_upload_is_whole_under_its_final_name(sftp: SftpKit, tmp_path: Path) -> None:
    data = payload(3 * 1024 * 1024 + 5)
    source = make_file(tmp_path, "export.csv", data)
    name = export_file_name("nightly", START, ".csv")
    destination = sftp.destination()
    assert isinstance(destination, Destination)
    seen: list[str] = []

    async def poll() -> None:
        while True:
            entries = set(os.listdir(sftp.out))
            if name in entries:
                size = (sftp.out / name).stat().st_size
                seen.append("whole" if size == len(data) else f"partial {size}")
            elif any(e.endswith(".part") for e in entries):
                seen.append("temporary")
            await asyncio.sleep(0)

    poller = asyncio.create_task(poll())
    try:
        delivered = await destination.deliver(source, name)
    finally:
        poller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poller
    assert (sftp.out / name).read_bytes() == data
    assert "temporary" in seen  # the upload went through a temporary name
    assert not [s for s in seen if s.startswith("partial")]
    assert os.listdir(sftp.out) == [name]
    assert delivered.location == f"sftp://exporter@127.0.0.1:{sftp.port}/out/{name}"
    assert (delivered.bytes, delivered.attempts) == (len(data), 1)


async def test_sftp_retries_a_dropped_connection_and_a_failed_write(
    sftp: SftpKit, tmp_path: Path
) -> None:
    data = payload(200_000)
    source = make_file(tmp_path, "export.csv", data)
    sftp.faults.drop_connections = 1
    delivered = await sftp.destination().deliver(source, "a-20261206T020000Z.csv")
    assert delivered.attempts == 2 and sftp.faults.connections == 2
    assert (sftp.out / "a-20261206T020000Z.csv").read_bytes() == data

    sftp.faults.fail_writes = 1
    delivered = await sftp.destination().deliver(source, "b-20261206T020000Z.csv")
    assert delivered.attempts == 2
    assert (sftp.out / "b-20261206T020000Z.csv").read_bytes() == data
    assert sorted(os.listdir(sftp.out)) == ["a-20261206T020000Z.csv", "b-20261206T020000Z.csv"]


async def test_sftp_gives_up_without_leaving_a_partial_file(sftp: SftpKit, tmp_path: Path) -> None:
    source = make_file(tmp_path, "export.csv", payload(300_000))
    sftp.faults.fail_writes = 1000
    with pytest.raises(DestinationError) as caught:
        await sftp.destination(attempts=2).deliver(source, "nightly-20261206T020000Z.csv")
    error = caught.value
    assert not error.permanent and "after 2 attempt(s)" in str(error)
    assert error.destination == f"sftp://exporter@127.0.0.1:{sftp.port}/out"
    assert "injected write failure" in str(error)
    assert os.listdir(sftp.out) == []  # neither the final name nor the temporary


async def test_sftp_refuses_a_host_key_that_does_not_match(sftp: SftpKit, tmp_path: Path) -> None:
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    wrong = tmp_path / "known_hosts.wrong"
    wrong.write_text(known_hosts_line(sftp.port, impostor))
    destination = sftp.destination(known_hosts=wrong)
    private_key = destination.settings.private_key.reveal()
    with pytest.raises(DestinationError) as caught:
        await destination.deliver(make_file(tmp_path, "x.csv", b"x"), "n-20261206T020000Z.csv")
    error = caught.value
    assert error.permanent  # never retried: a host that is not ours gets no second chance
    assert sftp.faults.connections == 1
    assert "host key of 127.0.0.1" in str(error) and str(wrong) in str(error)
    assert private_key not in str(error) and private_key not in repr(destination)
    assert os.listdir(sftp.out) == []


async def test_sftp_without_posix_rename_still_replaces_whole(
    sftp: SftpKit, tmp_path: Path
) -> None:
    sftp.faults.posix_rename = False
    (sftp.out / "feed.xml").write_bytes(b"yesterday's feed")
    data = payload(70_000)
    delivered = await sftp.destination().deliver(make_file(tmp_path, "f.xml", data), "feed.xml")
    assert delivered.attempts == 1
    assert (sftp.out / "feed.xml").read_bytes() == data
    assert os.listdir(sftp.out) == ["feed.xml"]


async def test_sftp_rotation_keeps_the_newest_n(sftp: SftpKit, tmp_path: Path) -> None:
    source = make_file(tmp_path, "x.csv", b"sku\n")
    destination = sftp.destination()
    names = [export_file_name("nightly", START + timedelta(days=d), ".csv") for d in range(4)]
    for name in names:
        await destination.deliver(source, name)
    (sftp.out / "nightly-full-20261201T020000Z.csv").write_text("another export")
    (sftp.out / f".{names[0]}.part").write_text("left by a dropped connection")
    assert await destination.rotate("nightly", 1) == sorted(names[:3])
    assert sorted(os.listdir(sftp.out)) == sorted([names[3], "nightly-full-20261201T020000Z.csv"])


# ---------------------------------------------------------------------------------------------
# S3: moto's server on 127.0.0.1, behind a proxy that injects S3's transient answers
# ---------------------------------------------------------------------------------------------

MIB = 1024 * 1024
PART = 5 * MIB  # S3's (and moto's) smallest part but the last
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_HOP = {"host", "content-length", "transfer-encoding", "connection", "expect", "keep-alive"}
ACCESS_KEY = Secret("AKIATESTEXPORTKEY0001")
SECRET_KEY = Secret("test-secret-key-9f8e7d6c5b4a")


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@dataclass
class Rule:
    """Answer 503 SlowDown to the next `count` requests `matches` accepts."""

    matches: Callable[[web.Request], bool]
    count: int


@dataclass
class S3Kit:
    url: str  # the proxy, which the destination talks to
    moto: str
    bucket: str
    rules: list[Rule]
    requests: list[str]

    def settings(self, **changes: Any) -> S3DestinationSettings:
        values: dict[str, Any] = {
            "bucket": self.bucket,
            "prefix": "exports/",
            "region": "us-east-1",
            "endpoint_url": self.url,
            "access_key_id": ACCESS_KEY,
            "secret_access_key": SECRET_KEY,
            "part_size": PART,
            "attempts": 3,
            "timeout": 10.0,
        }
        return S3DestinationSettings(**{**values, **changes})

    def destination(self, **changes: Any) -> S3Destination:
        return S3Destination(self.settings(**changes), **FAST)

    def direct(self) -> Any:
        """A client straight to moto, to look without the proxy's faults."""
        return boto3.client(
            "s3",
            endpoint_url=self.moto,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY.reveal(),
            aws_secret_access_key=SECRET_KEY.reveal(),
        )

    def keys(self) -> list[str]:
        answer = self.direct().list_objects_v2(Bucket=self.bucket)
        return sorted(o["Key"] for o in answer.get("Contents", ()))

    def pending_uploads(self) -> list[str]:
        answer = self.direct().list_multipart_uploads(Bucket=self.bucket)
        return [u["Key"] for u in answer.get("Uploads", ())]


@pytest.fixture
async def s3(moto_url: str, request: pytest.FixtureRequest) -> AsyncIterator[S3Kit]:
    bucket = "exports-" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    rules: list[Rule] = []
    requests: list[str] = []
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        requests.append(f"{request.method} {request.path_qs}")
        body = await request.read()
        for rule in rules:
            if rule.count > 0 and rule.matches(request):
                rule.count -= 1
                return web.Response(status=503, body=SLOW_DOWN, content_type="application/xml")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        headers["Host"] = request.host
        async with session.request(
            request.method,
            moto_url + request.path_qs,
            headers=headers,
            data=io.BytesIO(body),
            allow_redirects=False,
        ) as answer:
            data = await answer.read()
            out = {
                k: v
                for k, v in answer.headers.items()
                if k.lower() not in _HOP and k.lower() != "content-encoding"
            }
            return web.Response(status=answer.status, body=data, headers=out)

    app = web.Application(client_max_size=64 * MIB)
    app.router.add_route("*", "/{tail:.*}", forward)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    kit = S3Kit(str(server.make_url("")).rstrip("/"), moto_url, bucket, rules, requests)
    await asyncio.to_thread(kit.direct().create_bucket, Bucket=bucket)
    try:
        yield kit
    finally:
        await server.close()
        await session.close()


def upload_part(request: web.Request) -> bool:
    return request.method == "PUT" and "partNumber" in request.query


def put_object(request: web.Request) -> bool:
    return request.method == "PUT" and "uploadId" not in request.query


async def test_s3_small_upload_and_retry(s3: S3Kit, tmp_path: Path) -> None:
    data = payload(100_000)
    source = make_file(tmp_path, "export.csv", data)
    destination = s3.destination()
    assert isinstance(destination, Destination)
    s3.rules.append(Rule(put_object, 1))
    delivered = await destination.deliver(source, "nightly-20261206T020000Z.csv")
    assert delivered.attempts == 2
    assert delivered.location == f"s3://{s3.bucket}/exports/nightly-20261206T020000Z.csv"
    body = s3.direct().get_object(Bucket=s3.bucket, Key="exports/nightly-20261206T020000Z.csv")
    assert body["Body"].read() == data
    assert not [r for r in s3.requests if "uploads" in r]  # one put_object, no multipart


async def test_s3_multipart_upload_and_retry_of_a_part(s3: S3Kit, tmp_path: Path) -> None:
    data = payload(2 * PART + 123_457)
    source = make_file(tmp_path, "export.xml", data)
    s3.rules.append(Rule(lambda r: upload_part(r) and r.query["partNumber"] == "2", 1))
    delivered = await s3.destination().deliver(source, "feed-20261206T020000Z.xml")
    assert (delivered.attempts, delivered.bytes) == (2, len(data))
    parts = [r for r in s3.requests if r.startswith("PUT") and "partNumber=" in r]
    assert len(parts) == 2 + 3  # the first attempt stopped at part 2, the second sent all 3
    got = s3.direct().get_object(Bucket=s3.bucket, Key="exports/feed-20261206T020000Z.xml")
    assert got["Body"].read() == data
    assert s3.pending_uploads() == []  # the failed attempt's upload was aborted


async def test_s3_failed_multipart_leaves_no_object_and_no_pending_upload(
    s3: S3Kit, tmp_path: Path
) -> None:
    source = make_file(tmp_path, "export.xml", payload(PART + 1))
    s3.rules.append(Rule(lambda r: upload_part(r) and r.query["partNumber"] == "2", 1000))
    with pytest.raises(DestinationError) as caught:
        await s3.destination(attempts=2).deliver(source, "feed-20261206T020000Z.xml")
    error = caught.value
    assert not error.permanent and "after 2 attempt(s)" in str(error)
    assert "SlowDown (HTTP 503)" in str(error)
    assert error.destination == f"s3://{s3.bucket}/exports/ at {s3.url}"
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert secret.reveal() not in str(error)
    assert s3.keys() == []
    assert s3.pending_uploads() == []
    assert len([r for r in s3.requests if r.startswith("DELETE") and "uploadId=" in r]) == 2


async def test_s3_missing_bucket_is_permanent(s3: S3Kit, tmp_path: Path) -> None:
    source = make_file(tmp_path, "export.csv", b"sku\n")
    with pytest.raises(DestinationError) as caught:
        await s3.destination(bucket="no-such-bucket-here").deliver(source, "n-20261206T020000Z.csv")
    assert caught.value.permanent and "NoSuchBucket" in str(caught.value)
    assert len(s3.requests) == 1  # not retried


async def test_s3_rotation_keeps_the_newest_n(s3: S3Kit, tmp_path: Path) -> None:
    source = make_file(tmp_path, "x.csv", b"sku\n")
    destination = s3.destination()
    names = [export_file_name("nightly", START + timedelta(days=d), ".csv") for d in range(4)]
    for name in names:
        await destination.deliver(source, name)
    direct = s3.direct()
    direct.put_object(Bucket=s3.bucket, Key="exports/nightly-full-20261201T020000Z.csv", Body=b"")
    direct.put_object(Bucket=s3.bucket, Key=f"other/{names[0]}", Body=b"")  # outside the prefix
    s3.rules.append(Rule(lambda r: r.method == "POST" and "delete" in r.query, 1))
    assert await destination.rotate("nightly", 2) == sorted(names[:2])
    assert s3.keys() == sorted(
        [
            "exports/nightly-full-20261201T020000Z.csv",
            *(f"exports/{n}" for n in names[2:]),
            f"other/{names[0]}",
        ]
    )


def test_destination_for_builds_each_kind(tmp_path: Path) -> None:
    key = Secret("-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n")
    built = [
        destination_for(FolderDestinationSettings(tmp_path)),
        destination_for(SftpDestinationSettings("h", "u", key, tmp_path / "kh")),
        destination_for(S3DestinationSettings("bucket", access_key_id=ACCESS_KEY)),
    ]
    assert [type(d) for d in built] == [FolderDestination, SftpDestination, S3Destination]
    for destination in built:
        assert key.reveal() not in repr(destination) and ACCESS_KEY.reveal() not in repr(
            destination
        )
        assert "not really" not in destination.label
