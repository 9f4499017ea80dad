"""Channel adapters: they translate updates into neutral inputs and nothing else."""
