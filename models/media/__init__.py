"""Media: the content-addressed file store, and photos cleaned of their metadata before they are stored.
May import: Pillow, models.store and the root modules; nothing about tickets or a channel."""
