"""The demo: example services to route to, so a newcomer sees Portway work in one command."""
