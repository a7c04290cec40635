"""What Portway shows about itself: request statistics, the access log."""
