"""Model zoo: named, hash-checked checkpoints of defended snnTorch networks."""
