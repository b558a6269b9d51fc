"""HTTP: FluxClient, its transports and bounded reads. The wire codecs are in `agentloop._wire`."""
