"""The organisation: the org tree and its file, routing a point to a grid, scopes, people and their identities, rate limits, names, and who hears of failed deliveries.
May import: models.store, models.messages, the root modules (context, inputs); never tickets or anything above them."""
