"""Training: data streams (phantom, subject folders), losses, the three training stages, DDP, export."""
