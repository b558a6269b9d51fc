"""agentloop: an asynchronous tool-execution agent runtime for FluxRouter."""
