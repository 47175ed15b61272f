"""rlm-example-plugin: the plugin the rlm tutorial builds (docs/tutorial.md)."""
