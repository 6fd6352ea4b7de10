"""Aiguillage's event contracts: the one source of truth for what travels on Kafka."""
