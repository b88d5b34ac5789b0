"""What fans changes out: the relay thread that turns listener batches into
broadcasts, and the client manager that bounds each client's backlog."""
