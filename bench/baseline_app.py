"""The baseline for bench/submit.py: the same stack (uvicorn, FastAPI, pydantic) with nothing of ours.

One POST route validates a small body and answers an envelope, with no auth and no database: the
ceiling a submit endpoint on this stack can reach on this machine.
"""

from __future__ import annotations

import sys
from datetime import datetime, timezone

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict

app = FastAPI()


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    script: str
    gpu_count: int = 0


@app.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"success": True}


@app.post("/submit", status_code=201)
async def submit(body: Body) -> dict[str, object]:
    return {
        "success": True,
        "data": body.model_dump(),
        "message": "ok",
        "timestamp": datetime.now(timezone.utc).isoformat(),
    }


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )
