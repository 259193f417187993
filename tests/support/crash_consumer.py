"""Run the harness consumer and SIGKILL this process right after the first effect is durable
and before the consumer commits its offsets: the crash the inbox exists for.

    python -m tests.support.crash_consumer <topic_prefix> <schema>
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from typing import Any

from shared.bus import EventConsumer
from shared.settings import BureauSettings
from tests.support.bus import harness_runtime


async def main(prefix: str, schema: str) -> None:
    original = EventConsumer._apply

    async def apply_then_die(self: EventConsumer, record: Any) -> None:
        await original(self, record)
        os.kill(os.getpid(), signal.SIGKILL)

    EventConsumer._apply = apply_then_die  # type: ignore[method-assign]
    runtime = harness_runtime(BureauSettings(environment="test", topic_prefix=prefix), schema)
    await runtime.start()
    await asyncio.sleep(120)  # killed long before this


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
