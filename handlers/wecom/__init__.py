"""WeCom adapter: a decrypted callback message is translated and handed to the core; the card state both sides share (cards).
May import: the core; nothing of bot (the WeCom service hands it the API's download)."""
from .translate import dedupe_key, message_input

__all__ = ["dedupe_key", "message_input"]
