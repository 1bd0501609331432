"""The Phase 6 suite: the seed's eight groups of checks, shipped inside the package.

An installed `tooloo test` runs it with pytest underneath and prints a grouped summary;
`pytest` in the repository runs it too. One file per group, numbered in the seed's order.
"""
