"""Health probe for a consumer service: exit 0 when its Kafka consumer group has live members.

The services expose no HTTP port; what matters is that they consume. A group that is Stable (or
rebalancing) with at least one member means a consumer is connected and heartbeating.
Used by the compose healthchecks and handy locally:

    python deploy/local/group_health.py --group routing [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

HEALTHY_STATES = frozenset({"Stable", "PreparingRebalance", "CompletingRebalance"})


async def group_members(bootstrap: str, group: str, timeout_s: float) -> tuple[str, int]:
    """(state, member count) of ``group``."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="aiguillage-group-health",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            responses = await admin.describe_consumer_groups([group])
        for response in responses:
            described: list[dict[str, Any]] = response.to_object()["groups"]
            for entry in described:
                if entry["group"] == group and entry["error_code"] == 0:
                    return str(entry["state"]), len(entry["members"])
        return "Unknown", 0
    finally:
        await admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--group", required=True, help="consumer group id, e.g. routing")
    parser.add_argument(
        "--bootstrap",
        default=os.environ.get("AIGUILLAGE_KAFKA_BOOTSTRAP_SERVERS") or "127.0.0.1:19092",
    )
    parser.add_argument("--timeout", type=float, default=8.0, help="seconds (default 8)")
    args = parser.parse_args(argv)
    try:
        state, members = asyncio.run(group_members(args.bootstrap, args.group, args.timeout))
    except (KafkaError, OSError, TimeoutError) as exc:
        print(f"group {args.group}: kafka unreachable: {exc!r}", file=sys.stderr)
        return 1
    healthy = state in HEALTHY_STATES and members > 0
    print(f"group {args.group}: {state}, {members} member(s)")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
