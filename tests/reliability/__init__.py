"""Tests built to break the store: bad inputs, kills, concurrency, confinement, a state machine."""
