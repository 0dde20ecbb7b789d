"""Plain nn.Modules of the hybrid family (no Lightning): backbone, streams and levers."""
