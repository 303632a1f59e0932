"""What the tests share that is not a fixture: one way to wait for a condition."""
