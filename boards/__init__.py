"""The board database shared by every template."""
