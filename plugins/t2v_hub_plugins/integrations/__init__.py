"""Integrations with other tools, discovered through the ``t2v_hub.integrations`` entry points."""
