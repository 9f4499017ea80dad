"""Neutral outgoing messages (text, buttons, photos, a map pin, a reference to edit in place) and the outbox; the texts' catalogs (i18n).
May import: models.store; nothing that knows a channel."""
