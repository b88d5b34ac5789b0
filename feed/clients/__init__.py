"""What faces clients: the /events namespace and its wire protocol, who may connect
and how much they may send, and the HTTP routes (page, health, metrics)."""
