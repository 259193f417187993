"""Init container of every bureau Deployment: wait until the KafkaTopics exist.

A service creates the topics it uses when they are missing (shared/bus.py, ensure_topics), with
one replica, which is right on one machine. In a cluster the Strimzi Topic Operator creates them
from the KafkaTopic resources, replicated; a service that started first would create them
unreplicated. So the pod starts its service only once the operator's topics are there.

    python -m deploy.image.wait_for_topics
Reads BUREAU_KAFKA_BOOTSTRAP, BUREAU_TOPIC_PREFIX and BUREAU_WAIT_FOR_TOPICS (streams, comma
separated); gives up after BUREAU_WAIT_FOR_TOPICS_TIMEOUT seconds (default 600), failing the pod.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from aiokafka.admin import AIOKafkaAdminClient

from shared.kafka_client import client_options

log = logging.getLogger("wait_for_topics")


async def missing_topics(bootstrap: str, wanted: set[str]) -> set[str]:
    admin = AIOKafkaAdminClient(**client_options(bootstrap), request_timeout_ms=10_000)
    await admin.start()
    try:
        return wanted - set(await admin.list_topics())
    finally:
        await admin.close()


async def wait(bootstrap: str, wanted: set[str], timeout_s: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            missing = await missing_topics(bootstrap, wanted)
        except Exception as exc:  # Kafka not up yet: the same as topics not there yet
            missing = wanted
            log.info("kafka not reachable yet: %r", exc)
        if not missing:
            log.info("topics present: %s", ", ".join(sorted(wanted)))
            return True
        if loop.time() > deadline:
            log.error("topics still missing after %.0f s: %s", timeout_s, sorted(missing))
            return False
        log.info("waiting for topics: %s", ", ".join(sorted(missing)))
        await asyncio.sleep(5)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    prefix = os.environ.get("BUREAU_TOPIC_PREFIX", "bureau")
    streams = os.environ.get("BUREAU_WAIT_FOR_TOPICS", "")
    wanted = {f"{prefix}.{s.strip()}" for s in streams.split(",") if s.strip()}
    if not wanted:
        log.error("BUREAU_WAIT_FOR_TOPICS names no stream")
        return 2
    timeout_s = float(os.environ.get("BUREAU_WAIT_FOR_TOPICS_TIMEOUT", "600"))
    bootstrap = os.environ["BUREAU_KAFKA_BOOTSTRAP"]
    return 0 if asyncio.run(wait(bootstrap, wanted, timeout_s)) else 1


if __name__ == "__main__":
    sys.exit(main())
