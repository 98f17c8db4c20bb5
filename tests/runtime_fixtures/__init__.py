"""Hand-written model and helpers that build the device runtime for the runtime/protocol tests."""
