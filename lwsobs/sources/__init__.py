"""Sources translate a producer (aiohttp, a libwebsockets app) into Tracker calls."""
