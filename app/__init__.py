"""VLM Playground: compare vision-language models side by side."""
