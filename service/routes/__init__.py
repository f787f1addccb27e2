"""HTTP routes: thin functions that validate, call a plain class and shape the answer."""
