"""What the whole bureau left behind after an e2e run: its Kafka records and a database dump."""

from __future__ import annotations

import os
import subprocess
from typing import Any
from urllib.parse import urlparse

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient


async def kafka_records(bootstrap: str, prefix: str) -> list[Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefix + ".")]
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
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


def database_dump(database_url: str) -> str:
    url = urlparse(database_url.replace("+asyncpg", ""))
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    return subprocess.run(
        [
            "pg_dump",
            "-h",
            url.hostname or "127.0.0.1",
            "-p",
            str(url.port),
            "-U",
            url.username or "bureau",
            "--data-only",
            url.path.lstrip("/"),
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
