"""The core runtime: components, workflows, replay, the event writer and the in-process runner."""
