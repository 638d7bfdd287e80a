"""Built-in plugins of t2v-hub, discovered through entry points like third-party ones."""
