"""What a client leak report names: the caller's source line, and the URL without secrets."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from typing import Any

import aiohttp
from yarl import URL

import lwsobs
from lwsobs.sources.aiohttp.client_site import Site, caller_site, format_site
from lwsobs.sources.aiohttp.client_state import Acquisition


def line_after() -> int:
    return sys._getframe(1).f_lineno + 1


def relay_in(package_file: str | None, inner: Callable[[], Site | None]) -> Callable[[], Any]:
    """A function whose code claims to live in `package_file`'s directory, calling `inner`."""
    filename = os.path.join(os.path.dirname(package_file or ""), "relay_for_test.py")
    namespace: dict[str, Any] = {"inner": inner}
    exec(compile("def relay():\n    return inner()\n", filename, "exec"), namespace)
    relay: Callable[[], Any] = namespace["relay"]
    return relay


def test_the_site_is_the_line_that_called() -> None:
    line = line_after()
    site = caller_site()
    assert site == (__file__, line)
    assert format_site(site) == f"{__file__}:{line}"


def test_aiohttp_asyncio_and_lwsobs_frames_are_skipped() -> None:
    # user code -> aiohttp -> asyncio -> lwsobs -> caller_site, as a request's stack is
    in_lwsobs = relay_in(lwsobs.__file__, caller_site)
    in_asyncio = relay_in(asyncio.__file__, in_lwsobs)
    in_aiohttp = relay_in(aiohttp.__file__, in_asyncio)
    line = line_after()
    site = in_aiohttp()
    assert site == (__file__, line)


def test_user_code_between_library_frames_is_the_innermost_user_frame() -> None:
    def users_helper() -> Site | None:
        return relay_in(aiohttp.__file__, caller_site)()  # the helper started the request

    site = users_helper()
    assert site is not None
    assert site[0] == __file__
    assert site[1] == users_helper.__code__.co_firstlineno + 1


def test_no_site_formats_as_none() -> None:
    assert format_site(None) is None


def test_the_acquisition_names_method_and_url_without_query_fragment_or_credentials() -> None:
    url = URL("http://user:pw@example.test:8080/a/b?token=s3cret&x=1#part")
    attrs = Acquisition(0, "POST", url, ("/app/client.py", 42)).describe()
    assert attrs == {
        "lws.acquired.method": "POST",
        "lws.acquired.url": "http://example.test:8080/a/b",
        "lws.acquired.at": "/app/client.py:42",
    }


def test_an_acquisition_without_a_user_frame_names_no_line() -> None:
    attrs = Acquisition(0, "GET", URL("https://example.test/"), None).describe()
    assert attrs == {"lws.acquired.method": "GET", "lws.acquired.url": "https://example.test/"}
