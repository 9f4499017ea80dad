"""Local stand-ins for the outside world, so Whistle can run without Telegram.

``sandbox.botapi.FakeBotApi`` is a fake Telegram Bot API server used by the test
suite and by the browser sandbox page.
"""
