"""`python -m app.worker`: one process, one model, the OpenAI wire protocol."""
