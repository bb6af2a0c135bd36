"""Health: the heartbeat sender, its codec and targets, and the stats sources it samples."""
