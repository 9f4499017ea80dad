"""Intake: the report dialogue a resident goes through, "me too" for reports nearby, and scrubbing what they type.
May import: models.tickets and everything below it; never residents or figures."""
