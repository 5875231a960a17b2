"""Object stores for the sync tests: moto's S3 server handle, free ports, the publisher's repository and what a device sees."""

from __future__ import annotations

import json
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path

from edgec.cloud_sync.store import open_store

S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
          "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MotoServer:
    """A running moto S3 server."""

    endpoint: str
    port: int
    server: object

    def new_bucket(self) -> str:
        """Create an empty bucket and return its store URL."""
        import boto3

        name = f"fleet-{uuid.uuid4().hex[:12]}"
        client = boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=name)
        return f"s3://{name}/releases?endpoint={self.endpoint}&region=us-east-1"


def repository(store_url: str, keys: Path):  # noqa: ANN201 - Repository
    """The publisher-side repository object for a store."""
    from edgec.cloud_sync.publish import open_repository

    return open_repository(store_url, keys, create=True)


def device_view(store_url: str, keys: Path, folder: Path, channel: str = "stable") -> dict:
    """What a device sees: ngclient refresh from the trust anchor, then the verified channel document."""
    from edgec.cloud_sync.tuf_client import fetch_target, open_updater

    store = open_store(store_url)
    updater = open_updater(store, folder, (keys / "root.json").read_bytes())
    updater.refresh()
    _, data = fetch_target(updater, store, f"channels/{channel}.json")
    return json.loads(data)
