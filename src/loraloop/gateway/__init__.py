"""The OpenAI-compatible surface: deployments, the engines behind them, limits, metering, traces."""
