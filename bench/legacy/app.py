"""The original service's key lookup behind a minimal FastAPI app, for bench/legacy.sh.

GET /verify with `X-API-Key` answers 200 with the client that `get_client_by_api_key` (the
original's own function, imported from LEGACY_DIR) finds, or 401. DATABASE_URL names the
database, as in the original.
"""
import os
import sys

from fastapi import FastAPI, Header, HTTPException

sys.path.insert(0, os.environ["LEGACY_DIR"])
import api_keys  # noqa: E402  (the original module, found through LEGACY_DIR)

app = FastAPI()


@app.get("/verify")
async def verify(x_api_key: str = Header(default="")):
    client = await api_keys.get_client_by_api_key(x_api_key)
    if client is None:
        raise HTTPException(status_code=401)
    return client
