"""The Pulumi program's components: one module per component, composed by ``__main__.py``."""
