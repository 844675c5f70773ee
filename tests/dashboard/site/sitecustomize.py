"""Put on the PYTHONPATH of the dashboard's server process by the browser tests: it
registers the tests' listing store (``dirlist://``, see ``listing_store.py``) at
start-up, so that the console script itself runs unchanged."""

from resultstore import register_backend

register_backend("dirlist", "tests.dashboard.listing_store:ListingFileBackend")
