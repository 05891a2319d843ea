"""The pure core: dimensions (exact ints and symbolic polynomials), tensor specs, errors, the graph and
its propagation, the registries, each kind's description of its work, and a description of this machine
and of what other processes took of it. Imports nothing above it."""
