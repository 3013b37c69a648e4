"""Detection datasets, converted at this boundary to the internal box format."""
