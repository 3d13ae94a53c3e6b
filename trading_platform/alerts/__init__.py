"""Alerts: a champion output that crosses a rule becomes an alert, is delivered to webhooks and Telegram
chats at least once, and is judged on the candles that came (migration 16).

- ``core``: alerts created with the outputs (in the writer's transaction), judged on later closed candles,
  retracted when a correction takes the output back over the rule, their statistics, and the messages each
  destination asks for enqueued into the delivery outbox (``alert_deliveries``);
- ``delivery``: the long-running worker (`tp alerts deliver`) that claims due deliveries, sends them through
  ``adapters`` (signed webhooks, Telegram) and records what the receiver said.

Nothing here is imported by ``definitions`` at load time beyond ``core``'s light SQL helpers.
"""

CHANNEL = "tp_alerts"  # NOTIFYed when deliveries are enqueued (the worker LISTENs)
