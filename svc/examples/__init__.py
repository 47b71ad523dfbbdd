"""The talk's bare-bones example: a minimal producer and consumer, each a short runnable script."""
