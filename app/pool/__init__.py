"""The model pool: budget, LRU, leases, single flight; launcher, client, runtimes, sizes."""
