"""Privacy step of a site."""
