"""Alerts: read exposure events from the bus and deliver them to sinks, once each."""
