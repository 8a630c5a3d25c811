"""storyloom activities: one module per outside system."""
