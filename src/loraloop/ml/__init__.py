"""engine: models, training, evaluation, inference. Imports nothing from the platform."""
