"""Imagery: STAC search, loading, cloud-masked composites, covariates and normalisation for any chunk."""
