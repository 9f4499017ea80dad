"""Neutral outgoing messages (text, buttons, photos, a map pin, a reference to edit in place) and the outbox; the texts' catalogs (i18n); personal data masked in text shown to others (masking).
May import: models.store; nothing that knows a channel."""
