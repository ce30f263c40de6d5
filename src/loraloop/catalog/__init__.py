"""catalog: base models, adapters and adapter versions."""
