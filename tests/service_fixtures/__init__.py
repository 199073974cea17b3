"""Helpers and fixtures for the service tests (tests/test_service_*.py)."""
