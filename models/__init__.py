"""Whistle's core: tables, ticket rules, routing and the intake dialogue.

Nothing in this package imports Telegram or WeCom types: channel adapters in
``handlers/`` translate their updates into the neutral inputs defined here.
"""
