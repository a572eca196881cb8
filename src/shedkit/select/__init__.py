"""Selection rules on scores and clusters. Never imports torch."""
