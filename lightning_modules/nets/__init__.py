"""Plain torch.nn models, constructible and testable without Lightning."""
