"""The aiohttp source: server connections and requests, client connections and requests."""
