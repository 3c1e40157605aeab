"""Map production: the Zarr store, the SQLite run manifest, Dask clusters and `run`."""
