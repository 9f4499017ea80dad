"""Channel handlers, thin: they translate a channel's update into a neutral Input, call the core, answer the channel.
May import: the core (models) and the channel's own library; nothing of bot (the wiring hands them what they need)."""
