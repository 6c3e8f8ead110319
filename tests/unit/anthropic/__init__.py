"""client.anthropic() and SyncCCRClient: the anthropic SDK on this client's request path."""
