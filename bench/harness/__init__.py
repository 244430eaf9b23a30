"""The benchmark harness: serves the same models under several frameworks and loads each with wrk."""
