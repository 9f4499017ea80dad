"""Neutral outgoing messages (text, buttons, photos, a map pin, a reference to edit) and the outbox; texts in gettext catalogs (i18n).
May import: models.store; nothing that knows a channel."""
