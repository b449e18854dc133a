"""A blog writer whose research, outline, streamed sections, review and edit are durable steps.
``outlast worker examples.blog`` serves the workflow ``blog``."""

from examples.blog.workflow import blog

__all__ = ["blog"]
