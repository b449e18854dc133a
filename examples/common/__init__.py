"""What both examples share: LLM providers from the environment, the fixture-site host, and the
end-to-end harness behind ``python -m examples.<name>``."""
