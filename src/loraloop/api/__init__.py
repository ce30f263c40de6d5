"""Interfaces: the REST API (``/api``) and, later, the OpenAI-compatible ``/v1``."""
