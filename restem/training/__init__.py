"""Models and training: building and loading policies, and the one training loop."""
