"""nea's asyncio driver: sockets and tasks around the sans-IO HTTP core.

Owns: the asyncio ``Protocol`` per connection, the request cycle that talks ASGI to the app,
flow control and timeouts. Must not import ``nea.server`` (the layer above).
"""
