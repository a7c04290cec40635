"""TLS at the edge: server and upstream SSL contexts, certificates chosen by SNI and reloaded when
their files change, the client identity of mTLS connections, and (for passthrough) the ClientHello
read without terminating TLS."""
