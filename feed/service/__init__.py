"""What runs the process: this process's feed (start, stop, shutdown), threads or
gevent, logging, metrics, and the development server."""
