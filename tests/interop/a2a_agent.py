"""A tiny A2A echo agent built only with the official `a2a-sdk`, for the
gateway interop test (`test_a2a_gateway.py`).

    python3 a2a_agent.py --port 8123

serves, on 127.0.0.1:

- `GET  /.well-known/agent-card.json`: its Agent Card (A2A v1.0, one JSON-RPC
  interface at `http://127.0.0.1:PORT/`, streaming, skills `echo` and `submit`);
- `POST /`: the A2A JSON-RPC endpoint (`SendMessage`, `SendStreamingMessage`, ...);
- `GET  /debug/requests`: what it saw of each message it handled (the request
  headers, the text). This is a test hook, not part of A2A; the test reads it
  directly from the agent, never through the gateway.

With `--v03-compat` it also speaks A2A v0.3 on the same endpoint (`message/send`,
`message/stream`), and its card lists a second, v0.3 interface; the SDK then
serves a dual-version card that also carries the v0.3 fields `url`,
`preferredTransport` and `protocolVersion`.

Every message becomes a task that streams, with a pause between events so a
buffering proxy would show: the task (submitted), `working`, two artifact chunks
("echo: " and then the text), `completed`.
"""
from __future__ import annotations

import argparse
import asyncio

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from a2a.helpers import get_message_text, new_task_from_user_message, new_text_part
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill
from a2a.utils.constants import PROTOCOL_VERSION_0_3, PROTOCOL_VERSION_1_0, TransportProtocol

# Seconds between streamed events: long enough that events delivered as they
# happen arrive visibly apart, short enough to keep the test quick.
STEP_DELAY = 0.3
ARTIFACT_ID = "echo"


def agent_card(port: int, v03_compat: bool = False) -> AgentCard:
    card = AgentCard(
        name="Echo agent",
        description="Repeats what it is told, in two streamed chunks.",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(
                url=f"http://127.0.0.1:{port}/",
                protocol_binding=TransportProtocol.JSONRPC,
                protocol_version=PROTOCOL_VERSION_1_0,
            )
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(id="echo", name="Echo", description="Echoes the message back.",
                       tags=["echo"], examples=["hello"]),
            AgentSkill(id="submit", name="Submit", description="Accepts a submission.",
                       tags=["submit"]),
        ],
    )
    if v03_compat:
        card.supported_interfaces.append(AgentInterface(
            url=f"http://127.0.0.1:{port}/",
            protocol_binding=TransportProtocol.JSONRPC,
            protocol_version=PROTOCOL_VERSION_0_3,
        ))
    return card


class EchoExecutor(AgentExecutor):
    """Echoes the user's text as a task with a two-chunk artifact."""

    def __init__(self, seen: list[dict]):
        self.seen = seen

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        state = context.call_context.state if context.call_context else {}
        text = get_message_text(context.message) if context.message else ""
        self.seen.append({"headers": dict(state.get("headers", {})), "text": text})

        task = context.current_task or new_task_from_user_message(context.message)
        if context.current_task is None:
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await asyncio.sleep(STEP_DELAY)
        await updater.start_work()
        await asyncio.sleep(STEP_DELAY)
        await updater.add_artifact([new_text_part("echo: ")], artifact_id=ARTIFACT_ID,
                                   name="echo", last_chunk=False)
        await asyncio.sleep(STEP_DELAY)
        await updater.add_artifact([new_text_part(text)], artifact_id=ARTIFACT_ID,
                                   append=True, last_chunk=True)
        await asyncio.sleep(STEP_DELAY)
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue, context.task_id, context.context_id)
        await updater.cancel()


def build_app(port: int, v03_compat: bool = False) -> Starlette:
    card = agent_card(port, v03_compat)
    seen: list[dict] = []
    handler = DefaultRequestHandler(
        agent_executor=EchoExecutor(seen),
        task_store=InMemoryTaskStore(),
        agent_card=card,
    )

    async def debug_requests(_: Request) -> JSONResponse:
        return JSONResponse(seen)

    routes = [
        *create_agent_card_routes(card),
        *create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=v03_compat),
        Route("/debug/requests", debug_requests, methods=["GET"]),
    ]
    return Starlette(routes=routes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--v03-compat", action="store_true", help="also speak A2A v0.3")
    args = parser.parse_args()
    uvicorn.run(build_app(args.port, args.v03_compat), host="127.0.0.1", port=args.port, log_level="info")


if __name__ == "__main__":
    main()
