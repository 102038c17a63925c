"""Helpers shared by test modules (seeders, fixtures data): import these, never another test module."""
