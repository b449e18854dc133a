"""The durable store: Redis key schema, Lua scripts, the Redis and in-memory stores, embedded Valkey."""
