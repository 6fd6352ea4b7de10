"""Event contracts, grouped by the topic family that carries them."""
