"""From a model to an Estimate: ``estimate()`` propagates the graph and aggregates its rows; the diagnostics
read the Estimate and explain its pitfalls; the seed models are the case paramcalc was born from."""
