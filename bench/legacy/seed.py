"""Creates COUNT clients with the original's own `init_db` and `create_client` (bcrypt, cost
12) in DATABASE_URL, and prints their keys, one per line. For bench/legacy.sh.

usage: seed.py COUNT
"""
import asyncio
import os
import sys

sys.path.insert(0, os.environ["LEGACY_DIR"])
import api_keys  # noqa: E402


async def main(count: int) -> None:
    await api_keys.init_db()
    for i in range(count):
        _, key = await api_keys.create_client(f"legacy-{i}", rate_limit=1_000_000)
        print(key)
    await api_keys.close_pool()


asyncio.run(main(int(sys.argv[1])))
