"""Serving Cambrian models: streaming replies, a batching engine, an OpenAI-compatible HTTP server, a
web chat page. Heavy imports (torch, FastAPI, Gradio) stay in the submodules."""
