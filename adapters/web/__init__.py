"""The gateway's web server: status page, JSON API, health check and Prometheus metrics."""
