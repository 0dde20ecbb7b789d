"""Plain torch.nn image nets, constructible and testable without Lightning."""
