"""How the samples of a session are run: the runtime, the pytest items, the engine and its pipeline, the event loop, the window feeder and the cost estimate."""
