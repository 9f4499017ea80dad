"""WeCom adapter: a decrypted callback message is translated and handed to the core."""
from .translate import dedupe_key, message_input

__all__ = ["dedupe_key", "message_input"]
