"""Storage: engine and sessions, tables, migrations, image files, one module per aggregate."""
