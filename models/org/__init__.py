"""The organisation: the org tree and its file, routing a point to a grid, scopes, people and their identities, rate limits, names people read, and who hears of failed deliveries.
May import: models.messages, models.store, the root modules (context, inputs); never tickets or anything above them."""
