"""Run records: manifest, scores table, HTML report."""
