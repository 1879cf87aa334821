"""Behaviour that does not depend on a wire format: the Site and (later) the outbox's delivery rules."""
