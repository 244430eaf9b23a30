"""modelport: turn a trained model into a production web service."""
