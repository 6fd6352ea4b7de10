"""The operator console: pages for operators only, registered on the portal's app with
``PageKit`` (one module per area, each a ``register(app, kit)``)."""
