"""Neural networks and SE blocks."""
