"""The floor under bench/chat_latency.py: the least any Python relay can add on this machine.

A bare relay with none of EVA's work: aiohttp's WebSocket server, for each `message` frame
one streamed POST to the same Ollama-protocol stand-in through aiohttp's client, each NDJSON
line re-sent as a `token` frame, then `end`. No Django, no authentication, no rate limit, no
history, no database, no metrics. Measured with chat_latency.py's own clients and direct
baseline, rounds alternating, at the same concurrency levels. What this relay adds is what
the machine (2 vCPUs shared by the stand-in, the clients and the relay) costs any relay; EVA
cannot add less.

Run: .venv/bin/python bench/relay_floor.py [--levels 1 10 50] [--rounds 3] [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.chat_latency import PYTHON, ROOT, CpuMeter, Run, free_port, measure, row, start_standin, wait_http


def relay_app(ollama_url: str) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def chat(request: web.Request) -> web.WebSocketResponse:
        session: aiohttp.ClientSession = request.app["client"]
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            frame = json.loads(message.data)
            body = {"model": "phi3:mini", "messages": [{"role": "user", "content": frame["content"]}], "stream": True}
            async with session.post(f"{ollama_url}/api/chat", json=body) as response:
                async for line in response.content:
                    if line.strip():
                        content = json.loads(line).get("message", {}).get("content")
                        if content:
                            await ws.send_str(json.dumps({"type": "token", "content": content}))
            await ws.send_str(json.dumps({"type": "end"}))
        return ws

    async def client(app: web.Application):
        app["client"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1000))
        yield
        await app["client"].close()

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/ws/chat", chat)
    app.cleanup_ctx.append(client)
    return app


def serve(port: int, ollama_url: str, loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        uvloop.install()
    web.run_app(relay_app(ollama_url), host="127.0.0.1", port=port, access_log=None, print=None)


async def main_async(args: argparse.Namespace) -> None:
    ollama, ollama_url = start_standin()
    port = free_port()
    command = [PYTHON, __file__, "--serve", str(port), "--ollama", ollama_url, "--loop", args.loop]
    relay = await asyncio.to_thread(subprocess.Popen, command, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health")
    requests = {1: 10, 10: 4, 50: 3, 200: 2}
    lines = []
    try:
        await measure("ws", 2, 2, ollama_url=ollama_url, eva_url=url, key="")
        for level in args.levels:
            base, relayed = Run("direct", level), Run(f"bare relay ({args.loop})", level)
            for _ in range(args.rounds):
                for target, kind in ((base, "direct"), (relayed, "ws")):
                    cpu = CpuMeter({"relay": relay.pid, "stand-in": ollama.pid})
                    part = await measure(
                        kind, level, requests.get(level, 3), ollama_url=ollama_url, eva_url=url, key=""
                    )
                    print(f"  {kind} x{level}: CPU s/s {cpu.report()}", flush=True)
                    target.samples += part.samples
                    target.errors += part.errors
            lines.append(row(relayed, base))
            print(lines[-1], flush=True)
    finally:
        relay.terminate()
        ollama.terminate()
    print(
        "\n| path | concurrent streams | requests | errors | relay TTFT p50 / p99 ms | direct TTFT p50 / p99 ms "
        "| added TTFT p50 / p99 ms | added per token p50 ms |\n|---|---|---|---|---|---|---|---|"
    )
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ollama", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.ollama, args.loop)
        return
    import uvloop  # the client side, as in chat_latency.py

    uvloop.run(main_async(args))


if __name__ == "__main__":
    main()
