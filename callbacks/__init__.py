"""Lightning callbacks, each doing one thing through documented hooks."""
