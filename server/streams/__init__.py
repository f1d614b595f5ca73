"""Live streams: the publish/subscribe broker, log tailers and execution watchers.

Nothing here knows protobuf or gRPC: the API layer (server/api/logs.py,
server/api/watch.py) turns what these produce into messages.
"""
