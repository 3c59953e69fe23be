"""The web face: app factory, security, middleware, templating, routes."""
