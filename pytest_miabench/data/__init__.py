"""What a run reads: dataset rows (hub, parquet, JSON, the demo set) and their images, prepared for the endpoint."""
