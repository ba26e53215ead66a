"""Real servers (started as local processes) used by the integration tests."""
