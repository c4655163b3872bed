"""Connectors to the outside world: config sheets, HTTP, email, chat webhooks."""
