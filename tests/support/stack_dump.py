"""What the whole bureau left behind after an e2e run: its Kafka records and a database dump."""

from __future__ import annotations

import os
import subprocess
from typing import Any
from urllib.parse import urlparse

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from shared.kafka_client import client_options


async def kafka_records(bootstrap: str, prefix: str) -> list[Any]:
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix + ".")]
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        *topics,
        **client_options(bootstrap),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    records: list[Any] = []
    try:
        empty_polls = 0
        while empty_polls < 3:
            batch = await consumer.getmany(timeout_ms=1000)
            empty_polls = 0 if batch else empty_polls + 1
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


# Schemas the integration tier makes for itself: a name ending in the `unique` fixture's suffix.
TEST_SCHEMA = r"_[0-9a-f]{10}$"


def database_dump(database_url: str) -> str:
    """The data of every schema the bureau's services own (all but the integration tier's own
    schemas, which a long-lived dev stack accumulates by the thousand: dumping those took more
    than 20 GB of memory)."""
    url = urlparse(database_url.replace("+asyncpg", ""))
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    connect = [
        "-h",
        url.hostname or "127.0.0.1",
        "-p",
        str(url.port),
        "-U",
        url.username or "bureau",
    ]
    listing = subprocess.run(
        [
            "psql",
            *connect,
            "-d",
            url.path.lstrip("/"),
            "-Atc",
            "SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_'"
            f" AND nspname <> 'information_schema' AND nspname !~ '{TEST_SCHEMA}'",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    schemas = [arg for name in listing for arg in ("-n", name)]
    return subprocess.run(
        ["pg_dump", *connect, "--data-only", *schemas, url.path.lstrip("/")],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
