"""Per-platform template projects, and the portable C device runtime they share."""
