"""Shared test set-up: the SoftHSM token and virtual-device fixtures from the fixtures package."""

pytest_plugins = ["fixtures.pytest_plugin"]
