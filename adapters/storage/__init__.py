"""Durable storage: settings the back office changes must survive a restart or a power cut."""
