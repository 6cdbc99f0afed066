"""Data curation at Cambrian scale and the Internet Data Engine."""
