"""Watches the example page in a running headless Chromium through the DevTools protocol.

Chromium was started with --remote-debugging-port=0 and --user-data-dir=DIR, so it writes the
port it chose to DIR/DevToolsActivePort. This script finds the page target, then polls the DOM
(`#status`, `#echo-result`, the `<li>`s of `#oon-list`) until the echo result is the expected one
and enough OONs arrived, or the deadline passes. Console messages and exceptions of the page are
printed on failure. Exit status 0 on success, 1 on failure, 2 when DevTools is unreachable.

--dump-dom with --virtual-time-budget is not enough here: virtual time runs out without waiting
for real WebSocket traffic (tried: the echo result arrives, the once-a-second OONs do not).
"""

import argparse
import asyncio
import json
import pathlib
import sys
import time
import urllib.request

from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

PROBE = """JSON.stringify({
  status: document.querySelector('#status')?.textContent,
  echo: document.querySelector('#echo-result')?.textContent,
  oons: [...document.querySelectorAll('#oon-list > li')].map((li) => li.textContent),
  title: document.title,
})"""


async def wait_for(cond, what, deadline):
    """Polls cond() (a coroutine function or function) until truthy or the deadline passes."""
    while time.monotonic() < deadline:
        value = cond()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def devtools_port(profile):
    try:
        return int((profile / "DevToolsActivePort").read_text().split("\n")[0])
    except (OSError, ValueError, IndexError):
        return None


def page_target(port, url_part):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=2) as r:
            targets = json.load(r)
    except OSError:
        return None
    for t in targets:
        if t.get("type") == "page" and url_part in t.get("url", ""):
            return t["webSocketDebuggerUrl"]
    return None


async def watch(args):
    deadline = time.monotonic() + args.timeout

    try:
        port = await wait_for(lambda: devtools_port(args.user_data_dir), "DevToolsActivePort", deadline)
        ws_url = await wait_for(lambda: page_target(port, args.page), f"a page target {args.page}", deadline)
    except TimeoutError as e:
        print(f"browser: {e}", file=sys.stderr)
        return 2

    async with connect(ws_url, max_size=None) as ws:
        next_id = 0
        events = []  # console output and exceptions of the page, for the failure report

        async def command(method, **params):
            nonlocal next_id
            next_id += 1
            my_id = next_id
            await ws.send(json.dumps({"id": my_id, "method": method, "params": params}))
            while True:
                remaining = deadline - time.monotonic() + 5
                msg = json.loads(await asyncio.wait_for(ws.recv(), max(remaining, 1)))
                if msg.get("id") == my_id:
                    if "error" in msg:
                        raise RuntimeError(f"{method}: {msg['error']}")
                    return msg["result"]
                if msg.get("method") == "Runtime.consoleAPICalled":
                    p = msg["params"]
                    events.append(f"console.{p['type']}: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"]))
                elif msg.get("method") == "Runtime.exceptionThrown":
                    events.append("exception: " + json.dumps(msg["params"]["exceptionDetails"])[:500])

        await command("Runtime.enable")
        state = {}

        async def probe():
            nonlocal state
            result = await command("Runtime.evaluate", expression=PROBE, returnByValue=True)
            value = result.get("result", {}).get("value")
            state = json.loads(value) if isinstance(value, str) else {}
            return state.get("echo") == args.expect_echo and len(state.get("oons", [])) >= args.min_oons

        started = time.monotonic()
        try:
            await wait_for(probe, f"echo {args.expect_echo} and {args.min_oons} OONs", deadline)
        except TimeoutError as e:
            print(f"browser: FAIL: {e}; page state: {json.dumps(state)}", file=sys.stderr)
            for line in events:
                print(f"  {line}", file=sys.stderr)
            return 1
        print(
            f"browser: ok after {time.monotonic() - started:.1f}s: status {state['status']!r}, "
            f"echo {state['echo']}, {len(state['oons'])} OONs, first {state['oons'][0]}, title {state['title']!r}"
        )
        return 0


async def close_browser(profile):
    """Asks Chromium to quit, so that it and its helper processes are gone before the caller
    removes the profile (killing the main process alone leaves helpers writing to it)."""
    port = devtools_port(profile)
    if port is None:
        return
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/version", timeout=2) as r:
            url = json.load(r)["webSocketDebuggerUrl"]
        async with connect(url, max_size=None, open_timeout=5) as ws:
            await ws.send(json.dumps({"id": 1, "method": "Browser.close"}))
            await asyncio.wait_for(ws.wait_closed(), 5)
    except (OSError, KeyError, ValueError, TimeoutError, asyncio.TimeoutError, WebSocketException):
        pass  # the caller's kill is the fallback


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--user-data-dir", required=True, type=pathlib.Path)
    ap.add_argument("--page", default="example.html", help="part of the page URL to attach to")
    ap.add_argument("--expect-echo", required=True, help="expected text of #echo-result")
    ap.add_argument("--min-oons", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()
    try:
        return await watch(args)
    finally:
        await close_browser(args.user_data_dir)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
