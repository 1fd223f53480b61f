"""Ready-made example tasks (data builders) for trying autoembed end to end."""
