"""Using a trained network outside training: weight files from runs, shipped models, reconstruction of new data."""
