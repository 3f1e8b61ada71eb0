"""The reward service over HTTP: `POST /v1/grade` with a bearer token, bound to 127.0.0.1 unless configured.

Request: {"task": <Task>, "submission": {"messages": [<Message>], "files": {path: base64}}}
Reply:   <RewardResult>
`GET /health` answers without a token. The token comes from the environment (RLAIF_REWARD_TOKEN); every
other request without it gets 401. `HttpRewardClient` has the same `grade()` as `Rewarder` and
`RewardService`: a trainer uses whichever; an unreachable service is `infra_error`, never a score. A judge
budget that ran out is 402 with `{"budget_exhausted": {...}}`, and the client raises `BudgetExhausted`, as the
other two do.
"""

from __future__ import annotations

import base64
import hmac
from typing import Any

from aiohttp import ClientError, ClientSession, ClientTimeout, web

from rlaif.env import Submission
from rlaif.errors import RlaifError
from rlaif.types import Message, RewardResult, Task
from rlaif_rewards.cost import BudgetExhausted
from rlaif_rewards.service import Rewarder

TOKEN_ENV = "RLAIF_REWARD_TOKEN"


def encode(task: Task, submission: Submission) -> dict[str, Any]:
    return {"task": task.model_dump(mode="json"),
            "submission": {"messages": [m.model_dump(mode="json") for m in submission.messages],
                           "files": {p: base64.b64encode(c).decode() for p, c in submission.files.items()}}}


def decode(body: dict[str, Any]) -> tuple[Task, Submission]:
    sub = body["submission"]
    return Task.model_validate(body["task"]), Submission(
        messages=[Message.model_validate(m) for m in sub.get("messages", [])],
        files={p: base64.b64decode(c) for p, c in sub.get("files", {}).items()})


def make_app(rewarder: Rewarder, token: str) -> web.Application:
    """The aiohttp application serving one Rewarder."""
    if not token:
        raise RlaifError(f"{TOKEN_ENV} is not set; the reward service refuses to run without a token")

    async def grade(request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        try:
            task, submission = decode(await request.json())
        except (ValueError, KeyError, TypeError) as err:
            return web.json_response({"error": f"bad request: {type(err).__name__}: {str(err)[:200]}"}, status=400)
        try:
            result = await rewarder.grade(task, submission)
        except BudgetExhausted as err:
            spent = {"spent_usd": err.spent_usd, "limit_usd": err.limit_usd, "judge": err.judge}
            return web.json_response({"error": str(err), "budget_exhausted": spent}, status=402)
        return web.json_response(result.model_dump(mode="json"))

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "env": rewarder.env.name})

    async def on_startup(app: web.Application) -> None:
        await rewarder.start()

    async def on_cleanup(app: web.Application) -> None:
        await rewarder.close()

    app = web.Application(client_max_size=64 << 20)
    app.add_routes([web.post("/v1/grade", grade), web.get("/health", health)])
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


class HttpRewardClient:
    """Grades through a remote reward service. Use inside a running event loop; `close()` when done."""

    def __init__(self, url: str, token: str, timeout_s: float = 300.0) -> None:
        self.url, self._token, self._timeout = url.rstrip("/"), token, ClientTimeout(total=timeout_s)
        self._session: ClientSession | None = None

    async def grade(self, task: Task, submission: Submission) -> RewardResult:
        self._session = self._session or ClientSession(timeout=self._timeout)
        try:
            async with self._session.post(f"{self.url}/v1/grade", json=encode(task, submission),
                                          headers={"Authorization": f"Bearer {self._token}"}) as response:
                body = await response.json(content_type=None)
                if response.status == 402 and isinstance(body, dict) and "budget_exhausted" in body:
                    raise BudgetExhausted(**body["budget_exhausted"])
                if response.status != 200:
                    return RewardResult(status="infra_error", details={"error": f"reward service answered "
                                                                                f"{response.status}: {body}"})
                return RewardResult.model_validate(body)
        except (ClientError, TimeoutError, ValueError) as err:
            return RewardResult(status="infra_error", details={"error": f"reward service unreachable: "
                                                                        f"{type(err).__name__}"})

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
