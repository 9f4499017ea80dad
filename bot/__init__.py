"""Wiring: configuration, the application, channel clients, the sender and the CLI."""
