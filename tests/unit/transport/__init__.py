"""One attempt to CCR (``ccr/_transport.py``, ``_transport_aiohttp.py``, ``_http.py``): both senders."""
