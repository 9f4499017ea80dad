"""Delivery of the outbox: the sender (per-chat order, retries, leases across processes) and its send budgets, for every channel.
May import: bot.config and the core; no channel library (each channel plugs in as a Channel)."""
