"""`python -m services.cli`, as the Makefile, docker-compose and the suite run it."""
from services.cli import app

app()
