"""Headless Chromium for tests: the DOM a page rendered, and a DevTools session to click in it.

Debian's `chromium` runs with the flags this sandbox needs (no sandbox, no background
networking) and a fresh profile each time. `render` uses `--dump-dom` after a virtual-time
budget, so the page's timers and fetches have run; `devtools` opens the page and evaluates
script in it over the DevTools protocol (a websocket on loopback).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@asynccontextmanager
async def browser(
    *args: str, **kwargs: Any
) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """Chromium in its own process group with a fresh profile; on exit the whole group is gone.

    Chromium's helpers (renderer, zygote, crashpad) outlive the main process for a moment and
    keep writing to the profile, so the group is ended and waited for before the profile goes.
    """
    with tempfile.TemporaryDirectory(prefix="lwsobs-chromium-") as profile:
        proc = await asyncio.create_subprocess_exec(
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            *args,
            start_new_session=True,
            **kwargs,
        )
        try:
            yield proc, Path(profile)
        finally:
            await end_group(proc.pid)
            if proc.returncode is None:
                await proc.wait()


async def end_group(pgid: int) -> None:
    """SIGTERM a process group, then SIGKILL whatever is left after 5 s; return once it is gone."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        for _ in range(100):
            if not group_running(pgid):
                return
            await asyncio.sleep(0.05)


def group_running(pgid: int) -> bool:
    """Whether a process of the group is still running (zombies do not count: they hold no
    files, and in a container nobody may ever reap the orphaned ones)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            return True
    return False


def chromium() -> str:
    path = shutil.which("chromium")
    assert path, "Debian's chromium is required: apt-get install chromium"
    return path


async def render(url: str, *, budget_ms: int = 3000, screenshot: Path | None = None) -> Node:
    """Load `url` in headless Chromium, let its scripts run, and parse the DOM it printed."""
    args = [f"--virtual-time-budget={budget_ms}"]
    if screenshot is not None:
        args += [f"--screenshot={screenshot}", "--window-size=1280,1600"]
    async with browser(
        *args, "--dump-dom", url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    ) as (proc, _):
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    return parse(out.decode())


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    children: list[Node] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    @property
    def text(self) -> str:
        return "".join(self.texts) + "".join(c.text for c in self.children)

    def walk(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            yield from child.walk()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        return [
            n
            for n in self.walk()
            if (tag is None or n.tag == tag)
            and (cls is None or cls in n.classes)
            and all(n.attrs.get(k.replace("_", "-")) == v for k, v in attrs.items())
        ]

    def one(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, cls, **attrs)
        assert len(found) == 1, f"expected one {tag} {cls} {attrs}, found {len(found)}"
        return found[0]


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source"}


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].texts.append(data)


def parse(html: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(html)
    builder.close()
    return builder.root


class DevtoolsError(Exception):
    """The DevTools protocol answered with an error (e.g. the page navigated meanwhile)."""


class Page:
    """One page target over the DevTools protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def evaluate(self, expression: str) -> Any:
        """Run `expression` in the page (promises awaited) and return its JSON value."""
        msg_id = next(self.ids)
        params = {"expression": expression, "awaitPromise": True, "returnByValue": True}
        await self.ws.send_json({"id": msg_id, "method": "Runtime.evaluate", "params": params})
        async for msg in self.ws:
            data = json.loads(msg.data)
            if data.get("id") != msg_id:
                continue
            if "error" in data:
                raise DevtoolsError(data["error"])
            result = data["result"]
            assert "exceptionDetails" not in result, result["exceptionDetails"]
            return result["result"].get("value")
        raise AssertionError("the DevTools connection closed")

    async def loaded(self, url: str) -> None:
        """Wait until the page shows `url` and finished loading (it starts at about:blank)."""
        for _ in range(400):
            try:
                state = await self.evaluate("[location.href, document.readyState]")
            except DevtoolsError:  # navigating: the old document's context went away
                state = None
            if state == [url, "complete"]:
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"{url} did not load")


@asynccontextmanager
async def devtools(url: str) -> AsyncIterator[Page]:
    """Chromium with `url` open and a DevTools session on it; the browser ends afterwards."""
    async with browser(
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        url,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    ) as (proc, profile):
        port_file = profile / "DevToolsActivePort"
        for _ in range(600):  # Chromium writes its port here once it listens
            if port_file.exists() and port_file.read_text().strip():
                break
            assert proc.returncode is None, "chromium exited"
            await asyncio.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as session:
            for _ in range(200):  # the page target appears once navigation began
                async with session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                    pages = [t for t in await resp.json() if t["type"] == "page"]
                if pages:
                    break
                await asyncio.sleep(0.05)
            assert pages, "chromium opened no page"
            async with session.ws_connect(pages[0]["webSocketDebuggerUrl"]) as ws:
                page = Page(ws)
                await page.loaded(url)
                yield page
