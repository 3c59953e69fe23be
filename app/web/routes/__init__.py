"""One module per resource the server answers for."""
