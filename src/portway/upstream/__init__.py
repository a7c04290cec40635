"""The upstream side: connection pools per instance and the headers a request carries to it."""
