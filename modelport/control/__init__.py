"""Business rules: which module versions serve, and how they change."""
