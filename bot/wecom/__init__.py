"""WeCom (企业微信): message crypto, the callback face, the API client, the channel that renders outbox rows as template cards, the group robot, and the service that wires them.
May import: bot.delivery, bot.web, bot.config, handlers.wecom and the core; never bot.app at run time."""
