"""The Neurelay gateway: aiohttp WebSocket and HTTP front end over NATS JetStream."""
